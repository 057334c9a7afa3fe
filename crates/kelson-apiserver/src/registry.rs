//! The generic store every resource goes through (upstream's
//! `registry/generic/registry.Store`): keys, object metadata rules,
//! optimistic concurrency, finalizers and graceful deletion. What differs per
//! resource lives in [`crate::strategy`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kelson_store::{RangeRequest, Revision, Store};
use parking_lot::RwLock;
use serde_json::{json, Value};

use crate::admission::Operation;
use crate::cache::{CachedObject, Indexer, WatchCache};
use crate::meta::{self, meta_mut};
use crate::resources::Resource;
use crate::status::ApiError;
use crate::strategy;

/// Retries of an unconditional update that lost a race.
const UPDATE_RETRIES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    /// A pods/binding write: it sets spec.nodeName, which pod update
    /// validation refuses, so (as upstream's binding REST) it skips it.
    pub binding: bool,
    /// The admission chain of a client request; `None` for the server's
    /// own writes, which are not admitted.
    pub admission: Option<crate::admission::Admission>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a delete did.
pub enum Deleted {
    /// Gone from the store; the last state.
    Now(Value),
    /// Still there, with deletionTimestamp set (finalizers or grace period).
    Pending(Value),
}

pub struct Registry {
    store: Arc<dyn Store>,
    caches: RwLock<HashMap<String, Arc<WatchCache>>>,
    starting: tokio::sync::Mutex<()>,
}

fn store_key(res: &Resource, ns: Option<&str>, name: &str) -> Bytes {
    Bytes::from(res.key(ns, name))
}

/// Parses a stored value, setting its resourceVersion.
pub fn decode_stored(value: &[u8], rev: Revision) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object does not decode: {e}")))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(rev.to_string()));
    Ok(v)
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Registry {
        Registry {
            store,
            caches: RwLock::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The watch cache for a resource's storage, started on first use.
    pub async fn cache(&self, res: &Resource) -> Result<Arc<WatchCache>, ApiError> {
        let prefix = res.key_prefix();
        if let Some(c) = self.caches.read().get(&prefix) {
            return Ok(c.clone());
        }
        let _guard = self.starting.lock().await;
        if let Some(c) = self.caches.read().get(&prefix) {
            return Ok(c.clone());
        }
        let indexer = indexer_for(res);
        let cache = WatchCache::start(self.store.clone(), prefix.clone(), indexer)
            .await
            .map_err(|e| ApiError::internal(format!("starting watch cache: {e}")))?;
        self.caches.write().insert(prefix, cache.clone());
        Ok(cache)
    }

    /// The watch cache's copy of `key`, if that resource's cache is running
    /// and has it (never starts a cache).
    fn cached(&self, res: &Resource, key: &[u8]) -> Option<Arc<crate::cache::CachedObject>> {
        let cache = self.caches.read().get(&res.key_prefix()).cloned()?;
        cache.get(key)
    }

    /// Stops serving a storage location from memory (its CRD is gone).
    pub fn drop_cache(&self, prefix: &str) {
        self.caches.write().remove(prefix);
    }

    pub async fn get(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = store_key(res, ns, name);
        let got = self.store.get(&key, None).await?;
        match got.kv {
            Some(kv) => decode_stored(&kv.value, kv.mod_revision),
            None => Err(ApiError::not_found(&res.group, &res.plural, name)),
        }
    }

    /// Reads the object as of `rev` (a get with an exact resourceVersion).
    pub async fn get_at(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        rev: Revision,
    ) -> Result<Value, ApiError> {
        let key = store_key(res, ns, name);
        let got = self.store.get(&key, Some(rev)).await?;
        match got.kv {
            Some(kv) => decode_stored(&kv.value, kv.mod_revision),
            None => Err(ApiError::not_found(&res.group, &res.plural, name)),
        }
    }

    /// Refuses new objects in namespaces that are missing or terminating
    /// (upstream's NamespaceLifecycle admission).
    pub async fn check_namespace(&self, namespaces: &Resource, ns: &str) -> Result<(), ApiError> {
        let cache = self.cache(namespaces).await?;
        let key = store_key(namespaces, None, ns);
        let phase = match cache.get(&key) {
            // The cache indexes status.phase for field selectors already.
            Some(o) => o.field("status.phase").map(String::from),
            None => match self.store.get(&key, None).await?.kv {
                Some(kv) => serde_json::from_slice::<Value>(&kv.value)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/status/phase")
                            .and_then(Value::as_str)
                            .map(String::from)
                    }),
                None => return Err(ApiError::not_found("", "namespaces", ns)),
            },
        };
        if phase.as_deref() == Some("Terminating") {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Creates an object (already converted to the storage version,
    /// defaulted and validated by the caller's strategy hooks here).
    pub async fn create(
        &self,
        res: &Resource,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_encoded(res, ns, obj, opts).await.map(|c| c.0)
    }

    /// [`Registry::create`], also giving the created object as JSON (the
    /// stored encoding with its resourceVersion, in the storage version)
    /// when it was written: answering with these bytes saves encoding the
    /// object a second time.
    pub async fn create_encoded(
        &self,
        res: &Resource,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Option<Bytes>), ApiError> {
        {
            let m = meta_mut(&mut obj);
            if m.get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(ApiError::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            let name_empty = m
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if name_empty {
                if let Some(prefix) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    let name = format!("{prefix}{}", meta::random_suffix());
                    m.insert("name".into(), json!(name));
                }
            }
            // The create handler assigns the uid before defaulting (a Job's
            // generated selector uses it); other paths get one here.
            if m.get("uid")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            }
            m.insert("creationTimestamp".into(), json!(meta::now()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if res.generation || res.custom {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
            if let (true, Some(ns)) = (res.namespaced, ns) {
                m.insert("namespace".into(), json!(ns));
            } else if !res.namespaced {
                m.remove("namespace");
            }
        }
        if let Some(adm) = &opts.admission {
            let attrs = adm.attributes(res, Operation::Create, ns, None, opts.dry_run);
            adm.mutate(&attrs, &mut obj).await?;
        }
        strategy::prepare_create(res, &mut obj);
        strategy::validate(res, &obj, None)?;
        if let Some(adm) = &opts.admission {
            let attrs = adm.attributes(res, Operation::Create, ns, None, opts.dry_run);
            adm.validate(&attrs, &obj).await?;
        }
        let name = meta::name(&obj).to_string();
        let key = store_key(res, ns, &name);
        if opts.dry_run {
            if self.store.get(&key, None).await?.kv.is_some() {
                return Err(ApiError::already_exists(&res.group, &res.plural, &name));
            }
            return Ok((obj, None));
        }
        let value = Bytes::from(meta::for_storage(&obj));
        match self.store.create(key, value.clone()).await {
            Ok(kv) => {
                meta_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                let json = meta::with_resource_version(&value, kv.mod_revision).map(Bytes::from);
                Ok((obj, json))
            }
            Err(kelson_store::Error::AlreadyExists { .. }) => {
                Err(ApiError::already_exists(&res.group, &res.plural, &name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read-modify-write with optimistic concurrency. `change` gets the
    /// current object (None if absent) and returns the desired one. A
    /// resourceVersion in the desired object is a precondition; without one
    /// the write is retried when it loses a race. Returns the stored object
    /// and whether it was created.
    pub async fn guaranteed_update<F>(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        change: F,
    ) -> Result<(Value, bool), ApiError>
    where
        F: FnMut(Option<&Value>) -> Result<Value, ApiError>,
    {
        self.guaranteed_update_encoded(res, ns, name, opts, false, change)
            .await
            .map(|(v, created, _)| (v, created))
    }

    /// [`Registry::guaranteed_update`]; with `encode`, also the stored object
    /// as JSON (as [`Registry::create_encoded`] gives it) when this call wrote
    /// it. Splicing the resourceVersion into those bytes costs a scan of the
    /// object, which callers answering in another form skip.
    pub async fn guaranteed_update_encoded<F>(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        encode: bool,
        mut change: F,
    ) -> Result<(Value, bool, Option<Bytes>), ApiError>
    where
        F: FnMut(Option<&Value>) -> Result<Value, ApiError>,
    {
        let key = store_key(res, ns, name);
        // As upstream's GuaranteedUpdate, the first attempt starts from the
        // watch cache's copy; anything that copy may have got wrong (a
        // conflict, a failed precondition, an apparent no-op) is retried
        // from the store.
        let mut try_cache = true;
        for _ in 0..UPDATE_RETRIES {
            let cached = if std::mem::take(&mut try_cache) {
                self.cached(res, &key)
            } else {
                None
            };
            let from_cache = cached.is_some();
            let (old, mod_revision) = match cached {
                Some(c) => (c.value(), c.rev),
                None => match self.store.get(&key, None).await?.kv {
                    Some(kv) => (decode_stored(&kv.value, kv.mod_revision)?, kv.mod_revision),
                    None => {
                        let desired = change(None)?;
                        let created = self.create_encoded(res, ns, desired, opts).await;
                        match created {
                            Err(e) if e.reason == "AlreadyExists" => continue,
                            other => return other.map(|(o, json)| (o, true, json)),
                        }
                    }
                },
            };
            // Everything decided from `old` (the change, preconditions,
            // admission, validation): with a cached `old`, any refusal may be
            // the cache's lag, so it is retried from the store first.
            let prepared = async {
                let mut new = change(Some(&old))?;
                let precondition = meta::resource_version(&new).map(String::from);
                if let Some(rv) = &precondition {
                    if *rv != mod_revision.to_string() {
                        return Err(ApiError::stale(&res.group, &res.plural, name));
                    }
                }
                if let (Some(want), Some(have)) = (meta::uid(&new), meta::uid(&old)) {
                    if want != have {
                        return Err(ApiError::conflict(
                            &res.group,
                            &res.plural,
                            name,
                            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have}"),
                        ));
                    }
                }
                carry_over_meta(res, &mut new, &old);
                if let Some(adm) = &opts.admission {
                    let attrs =
                        adm.attributes(res, Operation::Update, ns, Some(&old), opts.dry_run);
                    adm.mutate(&attrs, &mut new).await?;
                }
                if !opts.binding {
                    strategy::validate(res, &new, Some(&old))?;
                }
                if let Some(adm) = &opts.admission {
                    let attrs =
                        adm.attributes(res, Operation::Update, ns, Some(&old), opts.dry_run);
                    adm.validate(&attrs, &new).await?;
                }
                Ok((new, precondition))
            }
            .await;
            let (mut new, precondition) = match prepared {
                Ok(p) => p,
                Err(_) if from_cache => continue,
                Err(e) => return Err(e),
            };
            // Removing the last finalizer of an object being deleted deletes it.
            if meta::deletion_timestamp(&new).is_some()
                && meta::finalizers(&new).is_empty()
                && !strategy::graceful_pending(res, &new)
                && !strategy::delete_blocked(res, &new)
            {
                if opts.dry_run {
                    return Ok((new, false, None));
                }
                return match self.store.delete(key.clone(), Some(mod_revision)).await {
                    Ok(d) => {
                        meta_mut(&mut new)
                            .insert("resourceVersion".into(), json!(d.revision.to_string()));
                        Ok((new, false, None))
                    }
                    Err(e) if e.is_conflict() && (precondition.is_none() || from_cache) => continue,
                    Err(e) if e.is_conflict() => {
                        Err(ApiError::stale(&res.group, &res.plural, name))
                    }
                    Err(e) => Err(e.into()),
                };
            }
            if same_object(&new, &old) {
                if from_cache {
                    // Only a no-op against the current state is one.
                    continue;
                }
                // Upstream skips no-op writes: the resourceVersion stays.
                return Ok((old, false, None));
            }
            if opts.dry_run {
                return Ok((new, false, None));
            }
            let value = Bytes::from(meta::for_storage(&new));
            match self
                .store
                .update(key.clone(), value.clone(), mod_revision)
                .await
            {
                Ok(kv) => {
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    let json = encode
                        .then(|| meta::with_resource_version(&value, kv.mod_revision))
                        .flatten()
                        .map(Bytes::from);
                    return Ok((new, false, json));
                }
                Err(e) if e.is_conflict() && (precondition.is_none() || from_cache) => continue,
                Err(e) if e.is_conflict() => {
                    return Err(ApiError::stale(&res.group, &res.plural, name))
                }
                Err(kelson_store::Error::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            &res.group,
            &res.plural,
            name,
            "too many concurrent updates; please try again",
        ))
    }

    /// Deletes an object, honouring preconditions, finalizers and graceful
    /// deletion.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = store_key(res, ns, name);
        for _ in 0..UPDATE_RETRIES {
            let Some(current) = self.store.get(&key, None).await?.kv else {
                return Err(ApiError::not_found(&res.group, &res.plural, name));
            };
            let old = decode_stored(&current.value, current.mod_revision)?;
            if let Some(uid) = &opts.uid {
                if meta::uid(&old) != Some(uid.as_str()) {
                    return Err(ApiError::conflict(
                        &res.group,
                        &res.plural,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta::uid(&old).unwrap_or("")
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != current.mod_revision.to_string() {
                    return Err(ApiError::conflict(
                        &res.group,
                        &res.plural,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            current.mod_revision
                        ),
                    ));
                }
            }
            let mut new = old.clone();
            let mut finalizers = meta::finalizers(&old);
            match opts.propagation.as_deref() {
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into());
                }
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                _ => {}
            }
            let grace = strategy::grace_period(res, &old, opts.grace_period);
            let pending =
                !finalizers.is_empty() || grace > 0 || strategy::delete_blocked(res, &old);
            if !pending {
                if opts.dry_run {
                    return Ok(Deleted::Now(old));
                }
                match self
                    .store
                    .delete(key.clone(), Some(current.mod_revision))
                    .await
                {
                    Ok(d) => {
                        let mut last = old;
                        meta_mut(&mut last)
                            .insert("resourceVersion".into(), json!(d.revision.to_string()));
                        return Ok(Deleted::Now(last));
                    }
                    Err(e) if e.is_conflict() || matches!(e, kelson_store::Error::NotFound) => {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            {
                let already = meta::deletion_timestamp(&old).is_some();
                let generation = meta::generation(&old);
                let m = meta_mut(&mut new);
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                let current_grace = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                // A deletion in progress only ever gets shorter.
                if !already || current_grace.is_some_and(|g| grace < g) {
                    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    m.insert("deletionTimestamp".into(), json!(meta::format_time(at)));
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    if generation > 0 && !already {
                        m.insert("generation".into(), json!(generation + 1));
                    }
                }
            }
            strategy::prepare_delete(res, &mut new);
            if same_object(&new, &old) {
                return Ok(Deleted::Pending(old));
            }
            if opts.dry_run {
                return Ok(Deleted::Pending(new));
            }
            match self
                .store
                .update(
                    key.clone(),
                    Bytes::from(meta::for_storage(&new)),
                    current.mod_revision,
                )
                .await
            {
                Ok(kv) => {
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok(Deleted::Pending(new));
                }
                Err(e) if e.is_conflict() || matches!(e, kelson_store::Error::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            &res.group,
            &res.plural,
            name,
            "too many concurrent updates; please try again",
        ))
    }

    /// A page of objects read from the store at `revision` (or now),
    /// starting after `after`.
    pub async fn list_from_store(
        &self,
        res: &Resource,
        ns: Option<&str>,
        after: Option<Bytes>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<(Vec<Arc<CachedObject>>, Revision, bool, u64), ApiError> {
        let mut prefix = res.key_prefix();
        if let (true, Some(ns)) = (res.namespaced, ns) {
            prefix.push_str(ns);
            prefix.push('/');
        }
        let resp = self
            .store
            .range(RangeRequest {
                prefix: Bytes::from(prefix),
                start_after: after,
                limit,
                revision,
            })
            .await?;
        let indexer = indexer_for(res);
        let items = resp
            .kvs
            .iter()
            .filter_map(|kv| crate::cache::decode(&indexer, &kv.key, &kv.value, kv.mod_revision))
            .collect();
        Ok((items, resp.revision, resp.more, resp.remaining))
    }

    /// Waits for the cache to reach what the store has acknowledged.
    pub async fn synced_cache(&self, res: &Resource) -> Result<Arc<WatchCache>, ApiError> {
        let cache = self.cache(res).await?;
        cache
            .sync()
            .await
            .map_err(|e| ApiError::timeout(format!("watch cache did not catch up: {e}")))?;
        Ok(cache)
    }

    pub async fn wait_cache(
        &self,
        res: &Resource,
        rev: Revision,
    ) -> Result<Arc<WatchCache>, ApiError> {
        let cache = self.cache(res).await?;
        let current = self.store.status().await?.revision;
        if rev > current {
            // Upstream waits a little for a future revision, then gives up.
            cache
                .wait_for(rev, Duration::from_secs(3))
                .await
                .map_err(|_| {
                    ApiError::timeout(format!(
                        "Too large resource version: {rev}, current: {current}"
                    ))
                })?;
        } else {
            cache
                .wait_for(rev, Duration::from_secs(10))
                .await
                .map_err(|e| ApiError::timeout(e.to_string()))?;
        }
        Ok(cache)
    }
}

/// Metadata an update may not change, and the generation rule.
fn carry_over_meta(res: &Resource, new: &mut Value, old: &Value) {
    let old_meta = meta::meta(old).cloned().unwrap_or_default();
    let spec_changed =
        (res.generation || res.custom) && meta::spec_part(new) != meta::spec_part(old);
    let m = meta_mut(new);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generation",
    ] {
        match old_meta.get(k) {
            Some(v) => {
                m.insert(k.into(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
    m.remove("selfLink");
    if spec_changed {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        m.insert("generation".into(), json!(g + 1));
    }
    // Clients may send an update without the resourceVersion; what is
    // stored is always the current one.
    if !m.contains_key("resourceVersion") {
        if let Some(rv) = old_meta.get("resourceVersion") {
            m.insert("resourceVersion".into(), rv.clone());
        }
    }
}

/// Equal apart from resourceVersion.
fn same_object(a: &Value, b: &Value) -> bool {
    // Compared in place: every update passes here, objects can be large.
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let (Some(am), Some(bm)) = (
        a.get("metadata").and_then(Value::as_object),
        b.get("metadata").and_then(Value::as_object),
    ) else {
        return a == b;
    };
    let meta_eq = |x: &serde_json::Map<String, Value>, y: &serde_json::Map<String, Value>| {
        x.iter()
            .filter(|(k, _)| *k != "resourceVersion")
            .all(|(k, v)| y.get(k) == Some(v))
    };
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| k == "metadata" || b.get(k) == Some(v))
        && meta_eq(am, bm)
        && meta_eq(bm, am)
}

pub fn indexer_for(res: &Resource) -> Indexer {
    let group = res.storage.0.clone();
    let resource = res.storage.1.clone();
    let sources = kelson_apimachinery::fields::field_sources(&group, &resource);
    Indexer::new(sources, move |obj: &Value| {
        strategy::selectable_fields(&group, &resource, obj)
    })
}
