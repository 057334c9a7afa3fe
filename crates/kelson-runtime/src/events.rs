//! core/v1 Events as upstream's client-go record package writes them, so
//! `kubectl describe` and `kubectl get events` show Kelson's components
//! the way they show kube-scheduler's and kube-controller-manager's.
//!
//! [`Recorder::event`] never blocks: it builds the Event and puts it on a
//! bounded queue (dropping it with a log line when full). Writer tasks
//! (`WRITERS` per recorder, each owning the events of the objects hashed to
//! it, so one object's events stay in order and in one correlator) drain the
//! queues through an [`EventCorrelator`] — spam filter,
//! aggregation of similar messages, and deduplication of repeats into one
//! Event whose `count` and `lastTimestamp` are PATCHed — and writes to the
//! API server with upstream's retry policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::{mpsc, oneshot};

/// Upstream's limits (client-go tools/record).
pub const DEFAULT_QUEUE: usize = 1000;
const LRU_ENTRIES: usize = 4096;
const AGGREGATE_MAX_EVENTS: usize = 10;
const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
const SPAM_BURST: u32 = 25;
const SPAM_QPS: f64 = 1.0 / 300.0;
const MAX_TRIES: u32 = 12;
const RETRY_SLEEP: Duration = Duration::from_secs(10);
/// Writer tasks per recorder. One write takes a round trip to the API
/// server; a single writer capped a busy controller near 400 events/s.
const WRITERS: usize = 8;

/// An Event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Tuning of a [`Recorder`]; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Events waiting to be written; more are dropped.
    pub queue: usize,
    /// Entries kept by each of the correlator's caches.
    pub cache_entries: usize,
    /// Token bucket per (source, object, type): burst and refill rate.
    pub spam_burst: u32,
    pub spam_qps: f64,
    /// This many distinct messages with the same reason for one object
    /// within `aggregate_interval` are combined into one Event.
    pub aggregate_max_events: usize,
    pub aggregate_interval: Duration,
    /// Writes that fail for want of a server are retried this often, this
    /// far apart (the first wait is a random part of it).
    pub max_tries: u32,
    pub retry_sleep: Duration,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            queue: DEFAULT_QUEUE,
            cache_entries: LRU_ENTRIES,
            spam_burst: SPAM_BURST,
            spam_qps: SPAM_QPS,
            aggregate_max_events: AGGREGATE_MAX_EVENTS,
            aggregate_interval: AGGREGATE_INTERVAL,
            max_tries: MAX_TRIES,
            retry_sleep: RETRY_SLEEP,
        }
    }
}

enum Msg {
    Event(Box<Event>),
    Flush(oneshot::Sender<()>),
}

/// Records Events for one component. Cheap to clone; the writer task ends
/// when the last clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct Recorder {
    /// One queue per writer task.
    tx: Arc<[mpsc::Sender<Msg>]>,
    source: Arc<EventSource>,
    /// Last name suffix handed out: names stay unique within the process
    /// even for two events in the same nanosecond.
    last_nanos: Arc<AtomicI64>,
}

impl Recorder {
    /// A recorder whose Events name `component` (e.g. "default-scheduler")
    /// and `host` (the node name or hostname; may be empty) as their source.
    /// Call it inside a tokio runtime: it spawns the writer task there.
    pub fn new(
        client: kube::Client,
        component: impl Into<String>,
        host: impl Into<String>,
    ) -> Recorder {
        Recorder::with_options(client, component, host, RecorderOptions::default())
    }

    pub fn with_options(
        client: kube::Client,
        component: impl Into<String>,
        host: impl Into<String>,
        options: RecorderOptions,
    ) -> Recorder {
        let host = host.into();
        let source = EventSource {
            component: Some(component.into()),
            host: (!host.is_empty()).then_some(host),
        };
        let per_writer = RecorderOptions {
            queue: options.queue.div_ceil(WRITERS).max(1),
            cache_entries: options.cache_entries.div_ceil(WRITERS).max(1),
            ..options
        };
        let (tx, rxs): (Vec<_>, Vec<_>) = (0..WRITERS)
            .map(|_| mpsc::channel(per_writer.queue))
            .unzip();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                for rx in rxs {
                    rt.spawn(write_loop(client.clone(), rx, per_writer.clone()));
                }
            }
            // Without a runtime nothing can write: events are dropped (and
            // logged) rather than panicking here.
            Err(_) => tracing::error!(
                "event recorder created outside a tokio runtime: events will be dropped"
            ),
        }
        Recorder {
            tx: tx.into(),
            source: Arc::new(source),
            last_nanos: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Records an event about `obj` (any k8s-openapi resource).
    pub fn event_for<K>(&self, obj: &K, kind: EventType, reason: &str, message: impl Into<String>)
    where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        self.event(&object_reference(obj), kind, reason, message);
    }

    /// Records an event about the object `involved` refers to (build it with
    /// [`object_reference`]). Returns at once; the write happens in the
    /// background.
    pub fn event(
        &self,
        involved: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let event = self.make_event(involved, kind, reason, message.into(), Timestamp::now());
        match self
            .writer_for(involved)
            .try_send(Msg::Event(Box::new(event)))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::error!(
                    object = involved.name.as_deref().unwrap_or(""),
                    reason,
                    "unable to record event: too many queued events, dropped event"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(
                    reason,
                    "unable to record event: the event writer has stopped"
                );
            }
        }
    }

    /// Waits until every event recorded before this call has been written
    /// (or given up on). For clean shutdown and tests.
    pub async fn flush(&self) {
        for tx in self.tx.iter() {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// The writer that owns `involved`'s events: the correlator keys on the
    /// involved object, so all of one object's events must meet in one.
    fn writer_for(&self, involved: &ObjectReference) -> &mpsc::Sender<Msg> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        involved.kind.hash(&mut h);
        involved.namespace.hash(&mut h);
        involved.name.hash(&mut h);
        &self.tx[(h.finish() as usize) % self.tx.len()]
    }

    fn make_event(
        &self,
        involved: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: String,
        now: Timestamp,
    ) -> Event {
        let nanos = unique_nanos(&self.last_nanos, now);
        let ref_name = involved.name.clone().unwrap_or_default();
        // Events about cluster-scoped objects (nodes) go to "default".
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let t = Time(now);
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&ref_name, nanos)),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: involved.clone(),
            reason: Some(reason.to_string()),
            message: Some(message),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            count: Some(1),
            type_: Some(kind.as_str().to_string()),
            source: Some((*self.source).clone()),
            reporting_component: self.source.component.clone(),
            reporting_instance: Some(self.source.host.clone().unwrap_or_default()),
            ..Event::default()
        }
    }
}

fn unique_nanos(last: &AtomicI64, now: Timestamp) -> i64 {
    let now = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
    let mut prev = last.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev.saturating_add(1));
        match last.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// A reference to `obj` as upstream's ref.GetReference builds it for
/// events: apiVersion, kind, name, namespace, uid and resourceVersion
/// (`kube::Resource::object_ref` leaves the resourceVersion out).
pub fn object_reference<K>(obj: &K) -> ObjectReference
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    let mut r = obj.object_ref(&K::DynamicType::default());
    r.resource_version = obj.meta().resource_version.clone();
    r
}

/// `<object name>.<unix nanoseconds in hex>` as upstream names them; a
/// random UUID when that is no valid DNS subdomain (e.g. too long).
pub fn event_name(ref_name: &str, unix_nanos: i64) -> String {
    let name = format!("{ref_name}.{unix_nanos:x}");
    if is_dns_subdomain(&name) {
        name
    } else {
        uuid::Uuid::new_v4().to_string()
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// A map of at most `cap` entries that forgets the least recently used.
struct Lru<V> {
    cap: usize,
    tick: u64,
    map: HashMap<String, (V, u64)>,
    order: BTreeMap<u64, String>,
}

impl<V> Lru<V> {
    fn new(cap: usize) -> Self {
        Lru {
            cap: cap.max(1),
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.map.get_mut(key)?;
        self.order.remove(&entry.1);
        self.order.insert(tick, key.to_string());
        entry.1 = tick;
        Some(&mut entry.0)
    }

    fn insert(&mut self, key: String, value: V) {
        self.tick += 1;
        if let Some((_, old)) = self.map.remove(&key) {
            self.order.remove(&old);
        }
        while self.map.len() >= self.cap {
            match self.order.pop_first() {
                Some((_, k)) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick));
    }
}

struct TokenBucket {
    tokens: f64,
    last: Timestamp,
}

struct AggregateRecord {
    messages: HashSet<String>,
    last: Timestamp,
}

#[derive(Clone)]
struct Observation {
    count: i32,
    first: Option<Time>,
    name: String,
    resource_version: Option<String>,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Correlated {
    /// Rate limited: not written.
    Skip,
    /// Create this Event.
    Create(Event),
    /// The Event exists already: apply this strategic merge patch (count,
    /// lastTimestamp, message) to `event`'s name; `event` is the whole
    /// object to create should it have expired meanwhile.
    Patch {
        event: Event,
        patch: serde_json::Value,
        key: String,
    },
}

/// Upstream's EventCorrelator: aggregation, deduplication, spam filter.
pub struct EventCorrelator {
    opts: RecorderOptions,
    spam: Lru<TokenBucket>,
    aggregates: Lru<AggregateRecord>,
    observed: Lru<Observation>,
}

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

/// Source, involved object and type: what every correlation key starts
/// with (the order within a key does not matter, only its fields).
fn key_fields(e: &Event) -> Vec<&str> {
    let src = e.source.as_ref();
    let o = &e.involved_object;
    vec![
        src.map_or("", |x| s(&x.component)),
        src.map_or("", |x| s(&x.host)),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
    ]
}

fn key_with(e: &Event, more: &[&Option<String>]) -> String {
    let mut fields = key_fields(e);
    fields.extend(more.iter().map(|f| s(f)));
    fields.join("\u{0}")
}

/// The fields that make two events the same event.
fn event_key(e: &Event) -> String {
    key_with(e, &[&e.involved_object.field_path, &e.reason, &e.message])
}

/// Events from one source about one object share a rate limit.
fn spam_key(e: &Event) -> String {
    key_with(e, &[])
}

/// Events that differ only in message are similar.
fn aggregate_key(e: &Event) -> String {
    key_with(
        e,
        &[&e.reason, &e.reporting_component, &e.reporting_instance],
    )
}

fn millis_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.as_millisecond() - a.as_millisecond()) as f64
}

impl EventCorrelator {
    pub fn new(opts: RecorderOptions) -> Self {
        let n = opts.cache_entries;
        EventCorrelator {
            opts,
            spam: Lru::new(n),
            aggregates: Lru::new(n),
            observed: Lru::new(n),
        }
    }

    /// Decides how `event` (fresh from the recorder) reaches the server.
    pub fn correlate(&mut self, event: Event, now: Timestamp) -> Correlated {
        let (event, key) = self.aggregate(event, now);
        let observed = self.observe(event, key);
        if !self.allow(&observed, now) {
            return Correlated::Skip;
        }
        observed
    }

    /// After a successful write: remember the server's name and version.
    pub fn update_state(&mut self, key: String, written: &Event) {
        self.observed.insert(
            key,
            Observation {
                count: written.count.unwrap_or(1),
                first: written.first_timestamp.clone(),
                name: written.metadata.name.clone().unwrap_or_default(),
                resource_version: written.metadata.resource_version.clone(),
            },
        );
    }

    /// Similar events (same reason, different messages) past the limit are
    /// folded into one "(combined from similar events)" Event.
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let key = event_key(&event);
        let agg_key = aggregate_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let interval_ms = self.opts.aggregate_interval.as_millis() as f64;
        let count = match self.aggregates.get_mut(&agg_key) {
            Some(rec) if millis_between(rec.last, now) <= interval_ms => {
                rec.messages.insert(message.clone());
                rec.last = now;
                rec.messages.len()
            }
            _ => {
                let mut messages = HashSet::new();
                messages.insert(message.clone());
                self.aggregates.insert(
                    agg_key.clone(),
                    AggregateRecord {
                        messages,
                        last: now,
                    },
                );
                1
            }
        };
        if count < self.opts.aggregate_max_events {
            return (event, key);
        }
        // Upstream drops one remembered message so the set stays at the
        // limit and later distinct messages keep being combined.
        if let Some(rec) = self.aggregates.get_mut(&agg_key) {
            if let Some(any) = rec.messages.iter().next().cloned() {
                rec.messages.remove(&any);
            }
        }
        let t = Time(now);
        let ref_name = event.involved_object.name.clone().unwrap_or_default();
        let nanos = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
        let combined = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&ref_name, nanos)),
                namespace: event.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            count: Some(1),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            message: Some(format!("(combined from similar events): {message}")),
            ..event
        };
        (combined, agg_key)
    }

    /// A repeat of an event already written becomes a patch of that Event.
    fn observe(&mut self, mut event: Event, key: String) -> Correlated {
        let last = self.observed.get_mut(&key).map(|o| o.clone());
        let result = match last {
            Some(last) if last.count > 0 => {
                event.metadata.name = Some(last.name.clone());
                event.metadata.resource_version = last.resource_version.clone();
                event.first_timestamp = last.first.clone();
                event.count = Some(last.count.saturating_add(1));
                let patch = serde_json::json!({
                    "count": event.count,
                    "lastTimestamp": event.last_timestamp,
                    "message": event.message,
                });
                Correlated::Patch {
                    event: event.clone(),
                    patch,
                    key: key.clone(),
                }
            }
            _ => Correlated::Create(event.clone()),
        };
        self.observed.insert(
            key,
            Observation {
                count: event.count.unwrap_or(1),
                first: event.first_timestamp.clone(),
                name: event.metadata.name.clone().unwrap_or_default(),
                resource_version: event.metadata.resource_version.clone(),
            },
        );
        result
    }

    /// The spam filter: a token bucket per source and object.
    fn allow(&mut self, c: &Correlated, now: Timestamp) -> bool {
        let event = match c {
            Correlated::Create(e) | Correlated::Patch { event: e, .. } => e,
            Correlated::Skip => return false,
        };
        let key = spam_key(event);
        let burst = f64::from(self.opts.spam_burst);
        let qps = self.opts.spam_qps;
        let bucket = match self.spam.get_mut(&key) {
            Some(b) => b,
            None => {
                self.spam.insert(
                    key.clone(),
                    TokenBucket {
                        tokens: burst,
                        last: now,
                    },
                );
                match self.spam.get_mut(&key) {
                    Some(b) => b,
                    None => return true,
                }
            }
        };
        let elapsed = millis_between(bucket.last, now).max(0.0) / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * qps).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn correlation_key(c: &Correlated) -> Option<String> {
    match c {
        Correlated::Create(e) => Some(event_key(e)),
        Correlated::Patch { key, .. } => Some(key.clone()),
        Correlated::Skip => None,
    }
}

async fn write_loop(client: kube::Client, mut rx: mpsc::Receiver<Msg>, opts: RecorderOptions) {
    let mut correlator = EventCorrelator::new(opts.clone());
    while let Some(msg) = rx.recv().await {
        let event = match msg {
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Msg::Event(e) => *e,
        };
        let result = correlator.correlate(event, Timestamp::now());
        let Some(key) = correlation_key(&result) else {
            tracing::debug!("event rate limited (spam filter)");
            continue;
        };
        let mut tries = 0;
        loop {
            match write(&client, &result).await {
                Outcome::Written(written) => {
                    // A combined event was observed under its aggregate key:
                    // keep its state there, as the correlator looks it up.
                    correlator.update_state(key.clone(), &written);
                    break;
                }
                Outcome::Rejected => break,
                Outcome::Retry => {
                    tries += 1;
                    if tries >= opts.max_tries {
                        tracing::error!("unable to write event (retry limit exceeded)");
                        break;
                    }
                    let mut delay = opts.retry_sleep;
                    if tries == 1 {
                        // Spread out the first retry of many recorders.
                        delay = delay.mul_f64(rand::random::<f64>());
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

enum Outcome {
    Written(Box<Event>),
    /// The server said no: retrying would not help.
    Rejected,
    Retry,
}

async fn write(client: &kube::Client, c: &Correlated) -> Outcome {
    let (event, patch) = match c {
        Correlated::Create(e) => (e, None),
        Correlated::Patch { event, patch, .. } => (event, Some(patch)),
        Correlated::Skip => return Outcome::Rejected,
    };
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let name = event.metadata.name.clone().unwrap_or_default();
    let mut create = patch.is_none();
    if let Some(patch) = patch {
        match api
            .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(e) => return Outcome::Written(Box::new(e)),
            // Expired (Events live an hour) or deleted: write it anew.
            Err(kube::Error::Api(s)) if s.code == 404 => create = true,
            Err(e) => return classify(e, event),
        }
    }
    if create {
        let mut fresh = event.clone();
        fresh.metadata.resource_version = None;
        return match api.create(&PostParams::default(), &fresh).await {
            Ok(e) => Outcome::Written(Box::new(e)),
            Err(e) => classify(e, event),
        };
    }
    Outcome::Rejected
}

fn classify(err: kube::Error, event: &Event) -> Outcome {
    let name = event.metadata.name.as_deref().unwrap_or("");
    match err {
        kube::Error::Api(s) => {
            if s.code == 409 || s.reason == "AlreadyExists" {
                tracing::debug!(event = name, error = %s.message, "server rejected event (will not retry)");
            } else {
                tracing::error!(event = name, error = %s.message, "server rejected event (will not retry)");
            }
            Outcome::Rejected
        }
        other => {
            tracing::warn!(event = name, error = %other, "unable to write event (may retry after sleeping)");
            Outcome::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_ref() -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some("web-1".into()),
            namespace: Some("default".into()),
            uid: Some("0b1c".into()),
            resource_version: Some("42".into()),
            ..Default::default()
        }
    }

    fn event(message: &str, at: Timestamp) -> Event {
        let t = Time(at);
        Event {
            metadata: ObjectMeta {
                name: Some(event_name("web-1", at.as_nanosecond() as i64)),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: pod_ref(),
            reason: Some("Scheduled".into()),
            message: Some(message.into()),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            count: Some(1),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("default-scheduler".into()),
                host: None,
            }),
            reporting_component: Some("default-scheduler".into()),
            reporting_instance: Some(String::new()),
            ..Default::default()
        }
    }

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + secs).unwrap()
    }

    #[test]
    fn names_are_object_name_dot_hex_nanos() {
        let n = event_name("web-1", 0x1842_3b4c_5d6e_7f80);
        assert_eq!(n, "web-1.18423b4c5d6e7f80");
        // Today's nanoseconds take 16 hex digits.
        let now = i64::try_from(Timestamp::now().as_nanosecond()).unwrap();
        let suffix = event_name("x", now).split_once('.').unwrap().1.to_string();
        assert_eq!(suffix.len(), 16);
        // Not a DNS subdomain: a UUID instead.
        let long = "a".repeat(250);
        let n = event_name(&long, now);
        assert!(uuid::Uuid::parse_str(&n).is_ok(), "{n}");
        let n = event_name("Upper", now);
        assert!(uuid::Uuid::parse_str(&n).is_ok(), "{n}");
    }

    #[test]
    fn unique_nanos_never_repeat() {
        let last = AtomicI64::new(0);
        let t = ts(0);
        let a = unique_nanos(&last, t);
        let b = unique_nanos(&last, t);
        assert_eq!(b, a + 1);
    }

    #[test]
    fn repeat_becomes_patch_of_count_and_last_timestamp() {
        let mut c = EventCorrelator::new(RecorderOptions::default());
        let first = c.correlate(event("assigned", ts(0)), ts(0));
        let Correlated::Create(created) = first.clone() else {
            panic!("{first:?}")
        };
        let mut written = created.clone();
        written.metadata.resource_version = Some("7".into());
        c.update_state(correlation_key(&first).unwrap(), &written);

        let second = c.correlate(event("assigned", ts(5)), ts(5));
        let Correlated::Patch { event, patch, .. } = second else {
            panic!("{second:?}")
        };
        assert_eq!(event.metadata.name, created.metadata.name);
        assert_eq!(event.count, Some(2));
        assert_eq!(event.first_timestamp, created.first_timestamp);
        assert_eq!(event.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(patch["count"], 2);
        assert_eq!(patch["message"], "assigned");
        assert_eq!(
            patch["lastTimestamp"],
            serde_json::to_value(Time(ts(5))).unwrap()
        );
        assert_eq!(patch.as_object().unwrap().len(), 3);
    }

    #[test]
    fn different_messages_are_different_events() {
        let mut c = EventCorrelator::new(RecorderOptions::default());
        assert!(matches!(
            c.correlate(event("a", ts(0)), ts(0)),
            Correlated::Create(_)
        ));
        assert!(matches!(
            c.correlate(event("b", ts(1)), ts(1)),
            Correlated::Create(_)
        ));
    }

    #[test]
    fn ten_similar_messages_are_combined() {
        let mut c = EventCorrelator::new(RecorderOptions::default());
        for i in 0..9 {
            let r = c.correlate(event(&format!("m{i}"), ts(i)), ts(i));
            assert!(
                matches!(r, Correlated::Create(ref e) if e.message.as_deref() == Some(&format!("m{i}")))
            );
        }
        let r = c.correlate(event("m9", ts(9)), ts(9));
        let Correlated::Create(e) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            e.message.as_deref(),
            Some("(combined from similar events): m9")
        );
        // The next distinct message is folded into that combined Event.
        let r = c.correlate(event("m10", ts(10)), ts(10));
        let Correlated::Patch {
            event: combined, ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(combined.count, Some(2));
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): m10")
        );
        // Past the interval, aggregation starts over.
        let later = ts(10 + 601);
        let r = c.correlate(event("fresh", later), later);
        assert!(matches!(r, Correlated::Create(ref e) if e.message.as_deref() == Some("fresh")));
    }

    #[test]
    fn spam_filter_allows_burst_then_one_per_five_minutes() {
        let mut c = EventCorrelator::new(RecorderOptions::default());
        for _ in 0..25 {
            assert_ne!(c.correlate(event("same", ts(0)), ts(0)), Correlated::Skip);
        }
        assert_eq!(c.correlate(event("same", ts(0)), ts(0)), Correlated::Skip);
        assert_eq!(
            c.correlate(event("same", ts(299)), ts(299)),
            Correlated::Skip
        );
        assert_ne!(
            c.correlate(event("same", ts(301)), ts(301)),
            Correlated::Skip
        );
        // Another object has its own bucket.
        let mut other = event("same", ts(301));
        other.involved_object.name = Some("web-2".into());
        assert_ne!(c.correlate(other, ts(301)), Correlated::Skip);
    }

    #[test]
    fn lru_forgets_least_recently_used() {
        let mut l = Lru::new(2);
        l.insert("a".into(), 1);
        l.insert("b".into(), 2);
        assert_eq!(l.get_mut("a").copied(), Some(1));
        l.insert("c".into(), 3);
        assert!(l.get_mut("b").is_none());
        assert_eq!(l.get_mut("a").copied(), Some(1));
        assert_eq!(l.get_mut("c").copied(), Some(3));
    }
}
