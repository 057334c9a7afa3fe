//! Watches: newline-delimited JSON events streamed to the client, from the
//! watch cache (or, for a start older than its window, from the store's
//! history), with selector transitions, bookmarks and timeouts as upstream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use kelson_store::{EventKind, WatchStart};
use serde_json::json;
use tokio::sync::mpsc;

use crate::cache::{decode, CacheError, CacheEvent, CachedObject, EventType, WatchCache};
use crate::convert;
use crate::handler::{parse_rv, Api, Body, Query};
use crate::list::{ns_prefix, Filter};
use crate::negotiate::Output;
use crate::registry::indexer_for;
use crate::resources::Resource;
use crate::status::ApiError;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Events ready at once go out together, up to about this many bytes: one
/// write (TLS record, HTTP/2 frame, wakeup) per burst rather than per event.
const CHUNK: usize = 32 * 1024;
/// Chunks a watch may have waiting for its connection. With CHUNK this
/// bounds what a slow client costs the server (about 128 KiB); beyond it the
/// watch waits, and falls back to the store's history if the cache moves on.
const QUEUED_CHUNKS: usize = 4;

struct Watcher {
    res: Arc<Resource>,
    ns: Option<String>,
    name: Option<String>,
    filter: Filter,
    out: Output,
    /// JSON of the stored version: cached bytes go out as they are.
    plain: bool,
    include_object: String,
    sent_columns: bool,
    /// Encoded events not yet handed to the connection.
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
}

pub async fn serve(
    api: Arc<Api>,
    res: Arc<Resource>,
    ns: Option<String>,
    name: Option<String>,
    q: &Query,
    out: Output,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(&res, q)?;
    let timeout = match q.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        // Upstream picks a random time between 30 and 60 minutes.
        _ => Duration::from_secs(1800 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 7),
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let initial_events = match q.get("sendInitialEvents") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        None | Some("") => None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid sendInitialEvents: {other:?}"
            )))
        }
    };
    let rv = q
        .get("resourceVersion")
        .filter(|s| !s.is_empty())
        .map(String::from);
    if initial_events.is_some() {
        if q.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", vec![crate::status::Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"\": sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
                field: "resourceVersionMatch".into(),
            }]));
        }
        if !bookmarks {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                vec![crate::status::Cause {
                    reason: "FieldValueForbidden".into(),
                    message:
                        "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true"
                            .into(),
                    field: "allowWatchBookmarks".into(),
                }],
            ));
        }
    }
    // Initial state: "unset" and "0" start with the current objects as
    // ADDED events, as does sendInitialEvents=true.
    let cache = match rv.as_deref() {
        None => api.registry.synced_cache(&res).await?,
        Some("0") => api.registry.cache(&res).await?,
        Some(r) => {
            let rev = parse_rv(r)?;
            let current = api.registry.store().status().await?.revision;
            if rev > current {
                api.registry.wait_cache(&res, rev).await?
            } else {
                api.registry.cache(&res).await?
            }
        }
    };
    let send_initial = match (rv.as_deref(), initial_events) {
        (_, Some(b)) => b,
        (None, None) | (Some("0"), None) => true,
        _ => false,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
    let mut w = Watcher {
        res: res.clone(),
        ns,
        name,
        filter,
        out,
        plain: crate::handler::serves_stored_json(&res, out),
        include_object: q.get("includeObject").unwrap_or("Metadata").to_string(),
        sent_columns: false,
        buf: Vec::new(),
        tx,
    };
    let start_rev = match rv.as_deref() {
        Some(r) if r != "0" => Some(parse_rv(r)?),
        _ => None,
    };
    let api2 = api.clone();
    tokio::spawn(async move {
        let run = async {
            let after = match start_rev {
                Some(rev) if !send_initial => rev,
                _ => {
                    if let Some(rev) = start_rev {
                        let _ = cache.wait_for(rev, Duration::from_secs(10)).await;
                    }
                    let (items, rev) = cache.list(&ns_prefix(&w.res, w.ns.as_deref()));
                    for o in items {
                        if w.selected(&o) {
                            w.push_object("ADDED", &o, None);
                            if w.buf.len() >= CHUNK && !w.flush().await {
                                return;
                            }
                        }
                    }
                    if !w.flush().await {
                        return;
                    }
                    if initial_events == Some(true) && !w.send_bookmark(rev, true).await {
                        return;
                    }
                    rev
                }
            };
            // From the cache's window; from store history while it is older,
            // and back to the cache once the watcher has caught up.
            let mut next = Source::Cache(after);
            loop {
                next = match next {
                    Source::Cache(rev) => match cache.watch_after(rev) {
                        Ok(cw) => follow_cache(&mut w, cw, bookmarks).await,
                        Err(CacheError::TooOld { .. }) => Source::Store(rev),
                        Err(e) => {
                            w.send_error(&too_old(e)).await;
                            Source::Done
                        }
                    },
                    Source::Store(rev) => from_store(&api2, &mut w, rev, &cache).await,
                    Source::Done => return,
                };
            }
        };
        let _ = tokio::time::timeout(timeout, run).await;
    });
    let stream = tokio_stream_from(rx);
    let ctype = "application/json";
    let body: Body = BodyExt::boxed(StreamBody::new(stream));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| Response::new(crate::handler::full(""))))
}

fn tokio_stream_from(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok(hyper::body::Frame::data(b)), rx))
    })
}

fn too_old(e: CacheError) -> ApiError {
    match e {
        CacheError::TooOld { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
        CacheError::Store(kelson_store::Error::Compacted {
            requested,
            compacted,
        }) => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => ApiError::internal(other.to_string()),
    }
}

/// Follows the store's own history for a start older than the cache window.
/// Where a watch takes its next events from.
enum Source {
    /// The cache's window, after this revision.
    Cache(u64),
    /// The store's history, after this revision.
    Store(u64),
    Done,
}

/// Streams cache events until the client goes away (Done) or the watcher
/// falls out of the cache's window (Store).
async fn follow_cache(
    w: &mut Watcher,
    mut cw: crate::cache::CacheWatch,
    bookmarks: bool,
) -> Source {
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            ev = cw.next() => match ev {
                Ok(Some(ev)) => {
                    w.push_event(&ev);
                    // Take whatever else is ready as well.
                    let mut behind = false;
                    while w.buf.len() < CHUNK {
                        match cw.try_next() {
                            Ok(Some(ev)) => w.push_event(&ev),
                            Ok(None) => break,
                            Err(_) => { behind = true; break; }
                        }
                    }
                    if !w.flush().await { return Source::Done; }
                    if behind {
                        // Too slow for the cache's window: the store's
                        // history still has every event.
                        return Source::Store(cw.last_revision());
                    }
                }
                Ok(None) => return Source::Done,
                Err(CacheError::TooOld { .. }) => return Source::Store(cw.last_revision()),
                Err(e) => { w.send_error(&too_old(e)).await; return Source::Done; }
            },
            _ = tick.tick(), if bookmarks => {
                if let Some(rev) = cw.bookmark_revision() {
                    if !w.send_bookmark(rev, false).await { return Source::Done; }
                }
            }
            _ = w.tx.closed() => return Source::Done,
        }
    }
}

/// How often a watcher reading the store checks whether the cache's window
/// covers it again.
const RETURN_CHECK: Duration = Duration::from_millis(200);

/// Streams the store's history after `after`. Each event is decoded here,
/// per watcher, so once the watcher has caught up and the cache's window
/// reaches back to it, it goes back to the cache (Cache).
async fn from_store(api: &Arc<Api>, w: &mut Watcher, after: u64, cache: &WatchCache) -> Source {
    let prefix = Bytes::from(w.res.key_prefix());
    let mut stream = match api
        .registry
        .store()
        .watch(prefix, WatchStart::After(after))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            w.send_error(&too_old(CacheError::Store(e))).await;
            return Source::Done;
        }
    };
    let indexer = indexer_for(&w.res);
    // Previous states matter only for selector transitions.
    let want_prev = !w.filter.is_empty();
    let mut last;
    let mut checked = tokio::time::Instant::now();
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = w.tx.closed() => return Source::Done,
        };
        let mut next = ev;
        let mut drained = false;
        loop {
            match next {
                Some(Ok(ev)) => {
                    last = ev.revision();
                    if let Some(cache_ev) = store_event(&indexer, want_prev, ev) {
                        w.push_event(&cache_ev);
                    }
                }
                Some(Err(e)) => {
                    w.flush().await;
                    w.send_error(&too_old(CacheError::Store(e))).await;
                    return Source::Done;
                }
                None => {
                    w.flush().await;
                    return Source::Done;
                }
            }
            if w.buf.len() >= CHUNK {
                break;
            }
            // Take whatever else is ready as well.
            match stream.try_next() {
                Some(ev) => next = Some(ev),
                None => {
                    drained = true;
                    break;
                }
            }
        }
        if !w.flush().await {
            return Source::Done;
        }
        if drained && checked.elapsed() >= RETURN_CHECK {
            checked = tokio::time::Instant::now();
            if cache.covers(last) {
                return Source::Cache(last);
            }
        }
    }
}

/// A store event as the cache would have recorded it. The store's events
/// carry the previous value; it is decoded only when `want_prev` (a
/// watcher with selectors). Nothing is kept between events: a watcher on
/// this path must not hold a copy of every object it has seen.
fn store_event(
    indexer: &crate::cache::Indexer,
    want_prev: bool,
    ev: kelson_store::Event,
) -> Option<CacheEvent> {
    let rev = ev.revision();
    let prev = ev
        .prev
        .as_ref()
        .filter(|_| want_prev)
        .and_then(|p| decode(indexer, &p.key, &p.value, p.mod_revision));
    match ev.kind {
        EventKind::Put => {
            let obj = decode(indexer, &ev.kv.key, &ev.kv.value, rev)?;
            Some(CacheEvent {
                kind: if ev.prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                rev,
                obj,
                prev,
            })
        }
        EventKind::Delete => {
            let p = ev.prev.as_ref()?;
            let obj = decode(indexer, &p.key, &p.value, rev)?;
            Some(CacheEvent {
                kind: EventType::Deleted,
                rev,
                obj,
                prev,
            })
        }
    }
}

impl Watcher {
    fn selected(&self, o: &CachedObject) -> bool {
        if let Some(ns) = &self.ns {
            if self.res.namespaced && o.namespace != *ns {
                return false;
            }
        }
        if let Some(n) = &self.name {
            if o.name != *n {
                return false;
            }
        }
        self.filter.matches(o)
    }

    /// Queues an event with selector transitions applied.
    fn push_event(&mut self, ev: &CacheEvent) {
        let now = self.selected(&ev.obj);
        // Without the previous state (not decoded when no selector could
        // tell the two apart) it was selected exactly when the new one is.
        let before = ev.prev.as_ref().map_or(now, |p| self.selected(p));
        match ev.kind {
            EventType::Added if now => self.push_object("ADDED", &ev.obj, None),
            EventType::Modified if now && before => self.push_object("MODIFIED", &ev.obj, None),
            EventType::Modified if now => self.push_object("ADDED", &ev.obj, None),
            EventType::Modified if before => {
                // Left the selection: a delete of the old state at this revision.
                if let Some(p) = ev.prev.as_ref() {
                    self.push_object("DELETED", p, Some(ev.rev));
                }
            }
            EventType::Deleted if now || before => self.push_object("DELETED", &ev.obj, None),
            _ => {}
        }
    }

    fn push_object(&mut self, kind: &str, o: &CachedObject, rev: Option<u64>) {
        if self.plain && rev.is_none() {
            const FRAMING: usize = r#"{"type":"","object":}"#.len() + 1;
            let b = &mut self.buf;
            // One allocation of the right size instead of doubling from
            // empty after every flush.
            b.reserve(FRAMING + kind.len() + o.json.len());
            b.extend_from_slice(b"{\"type\":\"");
            b.extend_from_slice(kind.as_bytes());
            b.extend_from_slice(b"\",\"object\":");
            b.extend_from_slice(&o.json);
            b.extend_from_slice(b"}\n");
            return;
        }
        if self.out == Output::Metadata {
            let mut meta = o.metadata();
            if let (Some(rev), Some(m)) = (rev, meta.as_object_mut()) {
                m.insert("resourceVersion".into(), json!(rev.to_string()));
            }
            let obj = crate::handler::partial_metadata_of(meta);
            if serde_json::to_writer(&mut self.buf, &json!({"type": kind, "object": obj})).is_ok() {
                self.buf.push(b'\n');
            }
            return;
        }
        let mut v = o.value();
        if let Some(rev) = rev {
            crate::meta::meta_mut(&mut v).insert("resourceVersion".into(), json!(rev.to_string()));
        }
        let v = convert::from_storage(&self.res, v);
        let obj = match self.out {
            Output::Table => {
                let t = crate::table::table(
                    &self.res,
                    &[v],
                    None,
                    &self.include_object,
                    !self.sent_columns,
                );
                self.sent_columns = true;
                t
            }
            _ => v,
        };
        if serde_json::to_writer(&mut self.buf, &json!({"type": kind, "object": obj})).is_ok() {
            self.buf.push(b'\n');
        }
    }

    /// Hands the queued events to the connection; false once the client is
    /// gone.
    async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return !self.tx.is_closed();
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(chunk).await.is_ok()
    }

    async fn send_bookmark(&mut self, rev: u64, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta});
        if serde_json::to_writer(&mut self.buf, &json!({"type": "BOOKMARK", "object": obj})).is_ok()
        {
            self.buf.push(b'\n');
        }
        self.flush().await
    }

    async fn send_error(&mut self, e: &ApiError) {
        if serde_json::to_writer(
            &mut self.buf,
            &json!({"type": "ERROR", "object": e.to_status()}),
        )
        .is_ok()
        {
            self.buf.push(b'\n');
        }
        self.flush().await;
    }
}
