//! The scheduling queue: an active heap ordered by the queue-sort plugin, a
//! backoff heap ordered by backoff expiry, and a map of unschedulable pods
//! that move back when a cluster event could help them or after 5 minutes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::{ClusterEvent, QueueSortPlugin};
use crate::types::PodInfo;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Pods stay unschedulable at most this long without a helpful event.
pub const MAX_UNSCHEDULABLE_DURATION: Duration = Duration::from_secs(5 * 60);
/// How often leftover unschedulable pods are checked.
const UNSCHEDULABLE_FLUSH_PERIOD: Duration = Duration::from_secs(30);

/// Time source, injected so tests control backoff without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct FakeClock {
    base: Instant,
    offset: parking_lot::Mutex<Duration>,
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock {
            base: Instant::now(),
            offset: parking_lot::Mutex::new(Duration::ZERO),
        }
    }
}

impl FakeClock {
    pub fn advance(&self, d: Duration) {
        *self.offset.lock() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock()
    }
}

/// A pod waiting in the queue.
#[derive(Debug, Clone)]
pub struct QueuedPodInfo {
    pub info: Arc<PodInfo>,
    /// When the pod was (re-)added to the queue.
    pub timestamp: Instant,
    /// Scheduling attempts so far.
    pub attempts: u32,
    pub initial_attempt: Option<Instant>,
    /// Plugins that rejected the pod in its last attempt.
    pub unschedulable_plugins: Vec<&'static str>,
    /// Insertion sequence: a stable tie-breaker.
    seq: u64,
}

impl QueuedPodInfo {
    pub fn key(&self) -> String {
        self.info.key()
    }
}

/// Ordering of a heap: true when the first item comes out first.
type Less = Box<dyn Fn(&QueuedPodInfo, &QueuedPodInfo) -> bool + Send + Sync>;

/// An indexed binary heap with a dynamic comparator, supporting removal by key.
struct Heap {
    items: Vec<QueuedPodInfo>,
    index: HashMap<String, usize>,
    less: Less,
}

impl Heap {
    fn new(less: Less) -> Heap {
        Heap {
            items: Vec::new(),
            index: HashMap::new(),
            less,
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.items.swap(i, j);
        self.index.insert(self.items[i].key(), i);
        self.index.insert(self.items[j].key(), j);
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !(self.less)(&self.items[i], &self.items[parent]) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < self.items.len() && (self.less)(&self.items[l], &self.items[best]) {
                best = l;
            }
            if r < self.items.len() && (self.less)(&self.items[r], &self.items[best]) {
                best = r;
            }
            if best == i {
                break;
            }
            self.swap(i, best);
            i = best;
        }
    }

    /// Adds or replaces (by key) an item.
    fn push(&mut self, item: QueuedPodInfo) {
        let key = item.key();
        if let Some(&i) = self.index.get(&key) {
            self.items[i] = item;
            self.up(i);
            let i = self.index[&key];
            self.down(i);
            return;
        }
        self.items.push(item);
        let i = self.items.len() - 1;
        self.index.insert(key, i);
        self.up(i);
    }

    fn peek(&self) -> Option<&QueuedPodInfo> {
        self.items.first()
    }

    fn remove_at(&mut self, i: usize) -> QueuedPodInfo {
        let last = self.items.len() - 1;
        if i != last {
            self.swap(i, last);
        }
        let item = self.items.pop().expect("heap is non-empty");
        self.index.remove(&item.key());
        if i < self.items.len() {
            self.down(i);
            self.up(i);
        }
        item
    }

    fn pop(&mut self) -> Option<QueuedPodInfo> {
        (!self.items.is_empty()).then(|| self.remove_at(0))
    }

    fn remove(&mut self, key: &str) -> Option<QueuedPodInfo> {
        let i = *self.index.get(key)?;
        Some(self.remove_at(i))
    }

    fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }
}

/// Backoff for a pod after `attempts` attempts: 1s doubled per attempt, ≤ 10s.
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d = d.saturating_mul(2);
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d.min(MAX_BACKOFF)
}

fn backoff_expiry(p: &QueuedPodInfo) -> Instant {
    p.timestamp + backoff_duration(p.attempts)
}

pub struct SchedulingQueue {
    clock: Arc<dyn Clock>,
    active: Heap,
    backoff: Heap,
    unschedulable: HashMap<String, QueuedPodInfo>,
    /// Pods with scheduling gates: not schedulable until updated.
    gated: HashMap<String, QueuedPodInfo>,
    events: Vec<(&'static str, Vec<ClusterEvent>)>,
    seq: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    last_unschedulable_flush: Instant,
}

impl SchedulingQueue {
    pub fn new(
        sort: Arc<dyn QueueSortPlugin>,
        clock: Arc<dyn Clock>,
        events: Vec<(&'static str, Vec<ClusterEvent>)>,
    ) -> SchedulingQueue {
        let now = clock.now();
        SchedulingQueue {
            clock,
            active: Heap::new(Box::new(move |a, b| sort.less(a, b))),
            backoff: Heap::new(Box::new(|a, b| backoff_expiry(a) < backoff_expiry(b))),
            unschedulable: HashMap::new(),
            gated: HashMap::new(),
            events,
            seq: 0,
            scheduling_cycle: 0,
            move_request_cycle: 0,
            last_unschedulable_flush: now,
        }
    }

    pub fn scheduling_cycle(&self) -> u64 {
        self.scheduling_cycle
    }

    fn new_queued(&mut self, info: Arc<PodInfo>) -> QueuedPodInfo {
        self.seq += 1;
        QueuedPodInfo {
            info,
            timestamp: self.clock.now(),
            attempts: 0,
            initial_attempt: None,
            unschedulable_plugins: Vec::new(),
            seq: self.seq,
        }
    }

    fn is_gated(info: &PodInfo) -> bool {
        info.pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty())
    }

    /// Adds a new pending pod (or replaces it wherever it is).
    pub fn add(&mut self, info: Arc<PodInfo>) {
        let key = info.key();
        self.delete(&key);
        let q = self.new_queued(info);
        if Self::is_gated(&q.info) {
            self.gated.insert(key, q);
        } else {
            self.active.push(q);
        }
    }

    /// A pending pod changed: the update may make it schedulable, so it moves
    /// out of the unschedulable map (to backoff if still backing off).
    pub fn update(&mut self, info: Arc<PodInfo>) {
        let key = info.key();
        if let Some(mut q) = self.gated.remove(&key) {
            q.info = info;
            if Self::is_gated(&q.info) {
                self.gated.insert(key, q);
            } else {
                self.active.push(q);
            }
            return;
        }
        if let Some(i) = self.active.index.get(&key).copied() {
            self.active.items[i].info = info;
            return;
        }
        if let Some(i) = self.backoff.index.get(&key).copied() {
            self.backoff.items[i].info = info;
            return;
        }
        if let Some(mut q) = self.unschedulable.remove(&key) {
            // As upstream's isPodUpdated: a change of status only (e.g. the
            // scheduler's own PodScheduled condition or nominatedNodeName)
            // cannot make the pod schedulable; it stays where it is.
            if !pod_updated(&q.info.pod, &info.pod) {
                q.info = info;
                self.unschedulable.insert(key, q);
                return;
            }
            q.info = info;
            self.requeue(q);
            return;
        }
        self.add(info);
    }

    pub fn delete(&mut self, key: &str) {
        self.active.remove(key);
        self.backoff.remove(key);
        self.unschedulable.remove(key);
        self.gated.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.active.contains(key)
            || self.backoff.contains(key)
            || self.unschedulable.contains_key(key)
            || self.gated.contains_key(key)
    }

    /// Moves a pod to backoff if it is still backing off, else to active.
    fn requeue(&mut self, q: QueuedPodInfo) {
        if backoff_expiry(&q) > self.clock.now() {
            self.backoff.push(q);
        } else {
            self.active.push(q);
        }
    }

    /// Pops the next pod to schedule, counting the attempt.
    pub fn pop(&mut self) -> Option<QueuedPodInfo> {
        let mut q = self.active.pop()?;
        self.scheduling_cycle += 1;
        q.attempts += 1;
        q.initial_attempt.get_or_insert_with(|| self.clock.now());
        Some(q)
    }

    /// Returns a pod whose attempt failed. Unschedulable pods wait for a
    /// helpful event, unless one arrived during their cycle; errors back off.
    pub fn add_unschedulable(&mut self, mut q: QueuedPodInfo, pod_cycle: u64, error: bool) {
        let key = q.key();
        if self.contains(&key) {
            return;
        }
        q.timestamp = self.clock.now();
        if error || self.move_request_cycle >= pod_cycle {
            self.backoff.push(q);
        } else {
            self.unschedulable.insert(key, q);
        }
    }

    /// Moves unschedulable pods a cluster event could help.
    pub fn move_on_event(&mut self, event: ClusterEvent) {
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, q)| self.event_helps(q, &event))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(q) = self.unschedulable.remove(&k) {
                self.requeue(q);
            }
        }
        self.move_request_cycle = self.scheduling_cycle;
    }

    fn event_helps(&self, q: &QueuedPodInfo, event: &ClusterEvent) -> bool {
        // A pod rejected without a known plugin may be helped by anything.
        q.unschedulable_plugins.is_empty()
            || q.unschedulable_plugins.iter().any(|p| {
                self.events
                    .iter()
                    .any(|(name, evs)| name == p && evs.iter().any(|r| r.covers(event)))
            })
    }

    /// Moves expired backoffs to active, and pods unschedulable for over
    /// 5 minutes back into the queue (checked every 30 s).
    pub fn flush(&mut self) {
        let now = self.clock.now();
        while let Some(q) = self.backoff.peek() {
            if backoff_expiry(q) > now {
                break;
            }
            if let Some(q) = self.backoff.pop() {
                self.active.push(q);
            }
        }
        if now.duration_since(self.last_unschedulable_flush) >= UNSCHEDULABLE_FLUSH_PERIOD {
            self.last_unschedulable_flush = now;
            let keys: Vec<String> = self
                .unschedulable
                .iter()
                .filter(|(_, q)| now.duration_since(q.timestamp) > MAX_UNSCHEDULABLE_DURATION)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                if let Some(q) = self.unschedulable.remove(&k) {
                    self.requeue(q);
                }
            }
        }
    }

    /// When `flush` next has work (earliest backoff expiry or leftover check).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(backoff_expiry);
        let leftover = (!self.unschedulable.is_empty())
            .then(|| self.last_unschedulable_flush + UNSCHEDULABLE_FLUSH_PERIOD);
        match (backoff, leftover) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    pub fn backoff_len(&self) -> usize {
        self.backoff.len()
    }

    pub fn unschedulable_len(&self) -> usize {
        self.unschedulable.len()
    }

    pub fn gated_len(&self) -> usize {
        self.gated.len()
    }

    /// Sequence number for tie-breaking equal queue-sort keys.
    pub fn seq_of(q: &QueuedPodInfo) -> u64 {
        q.seq
    }
}

/// Whether anything but status, resourceVersion, generation, managedFields
/// and finalizers changed (upstream's isPodUpdated).
fn pod_updated(
    old: &k8s_openapi::api::core::v1::Pod,
    new: &k8s_openapi::api::core::v1::Pod,
) -> bool {
    if old.spec != new.spec {
        return true;
    }
    let strip = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let mut m = m.clone();
        m.resource_version = None;
        m.generation = None;
        m.managed_fields = None;
        m.finalizers = None;
        m
    };
    strip(&old.metadata) != strip(&new.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{action, EventResource};
    use crate::plugins::PrioritySort;
    use crate::testutil::pod;

    fn info(name: &str, prio: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(pod(name).priority(prio).build())))
    }

    fn queue(clock: Arc<FakeClock>) -> SchedulingQueue {
        let fit_events = vec![ClusterEvent::new(
            EventResource::Node,
            action::ADD | action::UPDATE_NODE_ALLOCATABLE,
        )];
        SchedulingQueue::new(
            Arc::new(PrioritySort),
            clock,
            vec![("NodeResourcesFit", fit_events)],
        )
    }

    #[test]
    fn pops_by_priority_then_arrival() {
        let clock = Arc::new(FakeClock::default());
        let mut q = queue(clock.clone());
        q.add(info("low", 1));
        clock.advance(Duration::from_millis(1));
        q.add(info("high", 100));
        clock.advance(Duration::from_millis(1));
        q.add(info("low2", 1));
        clock.advance(Duration::from_millis(1));
        q.add(info("high2", 100));
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|p| p.info.name.clone())
            .collect();
        assert_eq!(order, ["high", "high2", "low", "low2"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_duration(1), Duration::from_secs(1));
        assert_eq!(backoff_duration(2), Duration::from_secs(2));
        assert_eq!(backoff_duration(4), Duration::from_secs(8));
        assert_eq!(backoff_duration(5), Duration::from_secs(10));
        assert_eq!(backoff_duration(30), Duration::from_secs(10));
    }

    #[test]
    fn unschedulable_pods_move_on_helpful_events_and_respect_backoff() {
        let clock = Arc::new(FakeClock::default());
        let mut q = queue(clock.clone());
        q.add(info("p", 0));
        let mut p = q.pop().unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins = vec!["NodeResourcesFit"];
        q.add_unschedulable(p, cycle, false);
        assert_eq!(q.unschedulable_len(), 1);

        // A label change does not help a pod rejected for resources.
        q.move_on_event(ClusterEvent::new(
            EventResource::Node,
            action::UPDATE_NODE_LABEL,
        ));
        assert_eq!(q.unschedulable_len(), 1);
        // A new node does; the pod is still in its 1 s backoff.
        q.move_on_event(ClusterEvent::new(EventResource::Node, action::ADD));
        assert_eq!(
            (q.unschedulable_len(), q.backoff_len(), q.active_len()),
            (0, 1, 0)
        );
        q.flush();
        assert_eq!(q.active_len(), 0);
        assert_eq!(q.next_wakeup(), Some(clock.now() + Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        q.flush();
        assert_eq!(q.active_len(), 1);
        let p = q.pop().unwrap();
        assert_eq!(p.attempts, 2);

        // Second failure: left over for 5 minutes, then retried.
        let cycle = q.scheduling_cycle();
        let mut p = p;
        p.unschedulable_plugins = vec!["NodeResourcesFit"];
        q.move_request_cycle = 0;
        q.add_unschedulable(p, cycle, false);
        clock.advance(Duration::from_secs(299));
        q.flush();
        assert_eq!(q.unschedulable_len(), 1);
        clock.advance(Duration::from_secs(31));
        q.flush();
        assert_eq!(q.unschedulable_len(), 0);
        assert_eq!(q.active_len(), 1);
    }

    #[test]
    fn event_during_cycle_sends_pod_to_backoff_and_errors_back_off() {
        let clock = Arc::new(FakeClock::default());
        let mut q = queue(clock.clone());
        q.add(info("p", 0));
        let p = q.pop().unwrap();
        let cycle = q.scheduling_cycle();
        q.move_on_event(ClusterEvent::new(EventResource::Node, action::ADD));
        q.add_unschedulable(p, cycle, false);
        assert_eq!(q.backoff_len(), 1);
        q.delete("default/p");
        assert!(!q.contains("default/p"));
    }

    #[test]
    fn status_only_update_keeps_an_unschedulable_pod_waiting() {
        let clock = Arc::new(FakeClock::default());
        let mut q = queue(clock.clone());
        q.add(info("p", 0));
        let mut p = q.pop().unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins = vec!["NodeResourcesFit"];
        q.add_unschedulable(p, cycle, false);
        // The scheduler's own PodScheduled=False patch comes back.
        let mut with_status = pod("p").priority(0).build();
        with_status.metadata.resource_version = Some("42".into());
        with_status.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("n1".into()),
            ..Default::default()
        });
        q.update(Arc::new(PodInfo::new(Arc::new(with_status))));
        assert_eq!(q.unschedulable_len(), 1);
        clock.advance(Duration::from_secs(20));
        q.flush();
        assert!(q.pop().is_none());
        // A spec change (here a label) may help: it moves.
        q.update(Arc::new(PodInfo::new(Arc::new(
            pod("p").priority(0).label("a", "b").build(),
        ))));
        assert_eq!(q.unschedulable_len(), 0);
        assert!(q.pop().is_some());
    }

    #[test]
    fn gated_pods_wait_for_update() {
        let clock = Arc::new(FakeClock::default());
        let mut q = queue(clock);
        let gated = Arc::new(PodInfo::new(Arc::new(
            pod("g").gate("example.com/wait").build(),
        )));
        q.add(gated);
        assert!(q.pop().is_none());
        assert_eq!(q.gated_len(), 1);
        q.update(info("g", 0));
        assert_eq!(q.pop().unwrap().info.name, "g");
    }
}
