//! Follows the pods of one namespace through a kube-rs watcher and notes,
//! per pod, when the bench first saw it bound (`spec.nodeName` set) and
//! Running. With a name prefix, pods named `PREFIXINDEX` are tracked by
//! index in flat arrays next to the time their create was sent, and other
//! pods are ignored; without one (a Deployment's pods, whose names the
//! bench does not choose) every pod is only counted, by a hash of its
//! name. Nothing else of a pod is kept.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The part of a pod the bench reads: name, resourceVersion (the watcher
/// resumes from it), whether it is bound and whether it runs. Every other
/// field of the JSON is skipped while parsing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "RawPod")]
pub struct PodLite {
    metadata: ObjectMeta,
    pub bound: bool,
    pub running: bool,
}

#[derive(Deserialize)]
struct RawPod {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
    #[serde(default)]
    status: RawStatus,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawStatus {
    phase: Option<String>,
}

impl From<RawPod> for PodLite {
    fn from(p: RawPod) -> PodLite {
        PodLite {
            metadata: ObjectMeta {
                name: p.metadata.name,
                namespace: p.metadata.namespace,
                resource_version: p.metadata.resource_version,
                ..ObjectMeta::default()
            },
            bound: p.spec.node_name.is_some_and(|n| !n.is_empty()),
            running: p.status.phase.as_deref() == Some("Running"),
        }
    }
}

impl PodLite {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}

impl kube::Resource for PodLite {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Microseconds since `epoch`, plus one so that 0 can mean "not yet".
fn mark(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64 + 1
}

fn unmark(epoch: Instant, v: u64) -> Option<Instant> {
    (v > 0).then(|| epoch + Duration::from_micros(v - 1))
}

/// What the creators and the watcher share while a phase runs.
pub struct Shared {
    pub epoch: Instant,
    prefix: String,
    /// When each indexed pod's create was first sent.
    sent: Vec<AtomicU64>,
    pub bound: AtomicU64,
    pub running: AtomicU64,
    /// Last time the count of bound (running) pods went up.
    last_bound: AtomicU64,
    last_running: AtomicU64,
    pub watch_errors: AtomicU64,
}

impl Shared {
    /// Name of indexed pod `i`.
    pub fn pod_name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// Notes that pod `i`'s create is being sent now (the first time only).
    pub fn mark_sent(&self, i: usize) {
        if let Some(s) = self.sent.get(i) {
            let _ = s.compare_exchange(
                0,
                mark(self.epoch, Instant::now()),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix(&self.prefix)?.parse().ok()?;
        (i < self.sent.len()).then_some(i)
    }

    pub fn last_bound(&self) -> Option<Instant> {
        unmark(self.epoch, self.last_bound.load(Ordering::Relaxed))
    }

    pub fn last_running(&self) -> Option<Instant> {
        unmark(self.epoch, self.last_running.load(Ordering::Relaxed))
    }

    /// When the first create was sent.
    pub fn first_sent(&self) -> Option<Instant> {
        let first = self
            .sent
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&v| v > 0)
            .min()?;
        unmark(self.epoch, first)
    }
}

/// Per indexed pod: when it was seen bound and Running (0 = never).
#[derive(Debug, Default)]
pub struct Marks {
    pub bound: Vec<u64>,
    pub running: Vec<u64>,
}

/// The watcher's private state: the marks, and hashes of the names of
/// unindexed pods already counted.
struct State {
    marks: Marks,
    other_bound: HashSet<u64>,
    other_running: HashSet<u64>,
}

impl State {
    fn new(n: usize) -> State {
        State {
            marks: Marks {
                bound: vec![0; n],
                running: vec![0; n],
            },
            other_bound: HashSet::new(),
            other_running: HashSet::new(),
        }
    }

    /// Records what `pod` shows, observed at `now`.
    fn observe(&mut self, shared: &Shared, pod: &PodLite, now: Instant) {
        let at = mark(shared.epoch, now);
        let (new_bound, new_running) = match shared.index(pod.name()) {
            Some(i) => {
                let b = pod.bound && self.marks.bound[i] == 0;
                if b {
                    self.marks.bound[i] = at;
                }
                let r = pod.running && self.marks.running[i] == 0;
                if r {
                    self.marks.running[i] = at;
                }
                (b, r)
            }
            None if !shared.prefix.is_empty() => return,
            None => {
                let mut h = DefaultHasher::new();
                pod.name().hash(&mut h);
                let key = h.finish();
                (
                    pod.bound && self.other_bound.insert(key),
                    pod.running && self.other_running.insert(key),
                )
            }
        };
        if new_bound {
            shared.bound.fetch_add(1, Ordering::Relaxed);
            shared.last_bound.store(at, Ordering::Relaxed);
        }
        if new_running {
            shared.running.fetch_add(1, Ordering::Relaxed);
            shared.last_running.store(at, Ordering::Relaxed);
        }
    }
}

/// A running pod watcher for one namespace.
pub struct Tracker {
    pub shared: Arc<Shared>,
    synced: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Marks>,
}

impl Tracker {
    /// Starts watching `namespace` (pods matching `label_selector`, if any);
    /// pods named `prefix` + 0..`count` are tracked by index; with an empty
    /// prefix all pods are counted.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        label_selector: Option<&str>,
        prefix: &str,
        count: usize,
    ) -> Tracker {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            prefix: prefix.to_string(),
            sent: (0..count).map(|_| AtomicU64::new(0)).collect(),
            bound: AtomicU64::new(0),
            running: AtomicU64::new(0),
            last_bound: AtomicU64::new(0),
            last_running: AtomicU64::new(0),
            watch_errors: AtomicU64::new(0),
        });
        let api: Api<PodLite> = Api::namespaced(client, namespace);
        let mut config = watcher::Config::default();
        if let Some(l) = label_selector {
            config = config.labels(l);
        }
        let (synced_tx, synced) = watch::channel(false);
        let (stop, mut stop_rx) = watch::channel(false);
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut state = State::new(count);
                let mut events = watcher(api, config).default_backoff().boxed();
                loop {
                    let ev = tokio::select! {
                        _ = stop_rx.changed() => break,
                        ev = events.next() => ev,
                    };
                    let now = Instant::now();
                    match ev {
                        None => break,
                        Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                            state.observe(&shared, &p, now)
                        }
                        Some(Ok(watcher::Event::InitDone)) => {
                            let _ = synced_tx.send(true);
                        }
                        Some(Ok(_)) => {}
                        // The backoff retries; the count goes in the report.
                        Some(Err(_)) => {
                            shared.watch_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                state.marks
            })
        };
        Tracker {
            shared,
            synced,
            stop,
            task,
        }
    }

    /// Waits until the initial list is done, so that creates made after
    /// this are seen as they happen.
    pub async fn synced(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.synced.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the watcher and returns the marks.
    pub async fn finish(self) -> Marks {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Per-pod durations from create sent to the mark, for pods that have both.
pub fn latencies(shared: &Shared, marks: &[u64]) -> Vec<Duration> {
    let mut out: Vec<Duration> = shared
        .sent
        .iter()
        .zip(marks)
        .filter_map(|(s, &m)| {
            let s = s.load(Ordering::Relaxed);
            (s > 0 && m > 0).then(|| Duration::from_micros(m.saturating_sub(s)))
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(prefix: &str, n: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            prefix: prefix.into(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bound: AtomicU64::new(0),
            running: AtomicU64::new(0),
            last_bound: AtomicU64::new(0),
            last_running: AtomicU64::new(0),
            watch_errors: AtomicU64::new(0),
        }
    }

    fn pod(json: serde_json::Value) -> PodLite {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reads_only_binding_and_phase() {
        let p = pod(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pod-3", "namespace": "ns", "resourceVersion": "42",
                         "managedFields": [{"manager": "x"}]},
            "spec": {"nodeName": "sim-1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        }));
        assert_eq!(p.name(), "pod-3");
        assert_eq!(p.metadata.resource_version.as_deref(), Some("42"));
        assert!(p.bound && p.running);
        let pending = pod(serde_json::json!({
            "metadata": {"name": "pod-4"}, "spec": {"nodeName": ""}, "status": {"phase": "Pending"}
        }));
        assert!(!pending.bound && !pending.running);
        let bare = pod(serde_json::json!({"metadata": {"name": "x"}}));
        assert!(!bare.bound);
    }

    #[test]
    fn counts_each_indexed_pod_once_and_ignores_others() {
        let s = shared("pod-", 3);
        let mut st = State::new(3);
        s.mark_sent(1);
        let bound =
            pod(serde_json::json!({"metadata": {"name": "pod-1"}, "spec": {"nodeName": "n"}}));
        let now = Instant::now();
        st.observe(&s, &bound, now);
        st.observe(&s, &bound, now + Duration::from_secs(1));
        assert_eq!(s.bound.load(Ordering::Relaxed), 1);
        assert_eq!(s.running.load(Ordering::Relaxed), 0);
        assert_eq!(st.marks.bound[1], mark(s.epoch, now), "first sighting kept");
        let last = s.last_bound().unwrap();
        assert!(last <= now && now - last < Duration::from_micros(2));
        // Another phase's pod, or beyond this phase's count: not counted.
        for name in ["init-1", "pod-7"] {
            let other = pod(serde_json::json!({
                "metadata": {"name": name}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}
            }));
            st.observe(&s, &other, now);
        }
        assert_eq!(s.bound.load(Ordering::Relaxed), 1);
        assert_eq!(s.running.load(Ordering::Relaxed), 0);
        let lat = latencies(&s, &st.marks.bound);
        assert_eq!(lat.len(), 1, "only pod-1 was both sent and bound");
    }

    #[test]
    fn without_a_prefix_every_pod_counts_once_by_name() {
        let s = shared("", 0);
        let mut st = State::new(0);
        let now = Instant::now();
        let pending = pod(serde_json::json!({"metadata": {"name": "web-abc"}}));
        let bound =
            pod(serde_json::json!({"metadata": {"name": "web-abc"}, "spec": {"nodeName": "n"}}));
        let running = pod(serde_json::json!({
            "metadata": {"name": "web-abc"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}
        }));
        for p in [&pending, &bound, &running, &running] {
            st.observe(&s, p, now);
        }
        let other =
            pod(serde_json::json!({"metadata": {"name": "web-xyz"}, "spec": {"nodeName": "m"}}));
        st.observe(&s, &other, now);
        assert_eq!(s.bound.load(Ordering::Relaxed), 2);
        assert_eq!(s.running.load(Ordering::Relaxed), 1);
        assert!(s.last_running().is_some());
    }

    #[test]
    fn first_send_wins() {
        let s = shared("p-", 2);
        s.mark_sent(0);
        let first = s.sent[0].load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        s.mark_sent(0);
        s.mark_sent(9); // out of range: ignored
        assert_eq!(s.sent[0].load(Ordering::Relaxed), first);
        assert_eq!(s.first_sent(), unmark(s.epoch, first));
        assert_eq!(s.pod_name(5), "p-5");
        assert_eq!(s.index("p-1"), Some(1));
        assert_eq!(s.index("p-2"), None);
        assert_eq!(s.index("q-1"), None);
    }
}
