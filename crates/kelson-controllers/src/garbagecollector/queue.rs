//! A deduplicating work queue, like client-go's workqueue: a key waits at
//! most once, is handed to one worker at a time, and a key added while it is
//! being processed comes back after `done`. Failed keys come back after an
//! exponential delay. Shared by this crate's hand-rolled controllers (the
//! garbage collector, endpoints, pod GC), which need deletions and
//! level-triggered keys that kube's `Controller` does not give them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Inner<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    shut: bool,
}

pub(crate) struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    notify: Notify,
    shutdown: CancellationToken,
}

/// First retry delay; doubles per failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub(crate) fn new(shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shut: false,
            }),
            notify: Notify::new(),
            shutdown,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // A panic elsewhere while holding the lock leaves the data usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, key: K) {
        let mut inner = self.lock();
        if inner.shut || !inner.dirty.insert(key.clone()) {
            return;
        }
        if !inner.processing.contains(&key) {
            inner.queue.push_back(key);
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay` (unless the queue shuts down first).
    pub(crate) fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = queue.shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => queue.add(key),
            }
        });
    }

    /// Re-adds a key whose processing failed, after a delay that grows with
    /// each consecutive failure.
    pub(crate) fn add_rate_limited(self: &Arc<Self>, key: K) {
        let n = {
            let mut inner = self.lock();
            let n = inner.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = BASE_BACKOFF
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(MAX_BACKOFF);
        self.add_after(key, delay);
    }

    /// Clears the failure count of a key that was processed successfully.
    pub(crate) fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key, or None once the queue is shut down.
    pub(crate) async fn get(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if inner.shut || self.shutdown.is_cancelled() {
                    return None;
                }
                if let Some(key) = inner.queue.pop_front() {
                    inner.dirty.remove(&key);
                    inner.processing.insert(key.clone());
                    return Some(key);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = self.shutdown.cancelled() => {
                    self.lock().shut = true;
                    return None;
                }
            }
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub(crate) fn done(&self, key: &K) {
        let mut inner = self.lock();
        inner.processing.remove(key);
        if inner.dirty.contains(key) {
            inner.queue.push_back(key.clone());
            drop(inner);
            self.notify.notify_one();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_waits_once_and_returns_if_added_while_processing() {
        let q = WorkQueue::new(CancellationToken::new());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        // Added while being processed: not handed out twice at once.
        q.add("a");
        assert_eq!(q.get().await, Some("b"));
        assert_eq!(q.len(), 0);
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
    }

    #[tokio::test]
    async fn shutdown_wakes_waiting_workers() {
        let token = CancellationToken::new();
        let q: Arc<WorkQueue<u32>> = WorkQueue::new(token.clone());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        token.cancel();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test]
    async fn failed_keys_come_back_later() {
        let q: Arc<WorkQueue<u32>> = WorkQueue::new(CancellationToken::new());
        q.add_rate_limited(7);
        assert_eq!(q.len(), 0);
        let got = tokio::time::timeout(Duration::from_secs(2), q.get()).await;
        assert_eq!(got.unwrap(), Some(7));
    }
}
