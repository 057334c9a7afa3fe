//! The behaviour every [`Store`] backend must have.
//!
//! Each check takes a fresh, empty store with automatic compaction off. A
//! backend's test file runs all of them with [`conformance_tests!`]:
//!
//! ```ignore
//! async fn new_store() -> (Arc<dyn Store>, Box<dyn std::any::Any + Send>) { ... }
//! kelson_store_conformance::conformance_tests!(new_store);
//! ```
//! The second value of the pair is kept alive for the length of the test
//! (a temporary directory, a child process…).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kelson_store::{
    Error, Event, EventKind, RangeRequest, Revision, Store, WatchStart, WatchStream,
    MAX_VALUE_BYTES,
};

/// Generates one `#[tokio::test]` per conformance check.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@cases $factory;
            revisions_and_versions,
            create_if_absent,
            compare_and_swap_conflicts,
            delete_semantics,
            reads_at_past_revisions,
            paginated_list_sees_one_revision,
            watch_replays_then_streams,
            watch_from_now_and_prefixes,
            watch_progress_covers_other_prefixes,
            slow_watcher_misses_nothing,
            compacted_reads_and_watches_fail,
            watch_ends_when_history_is_compacted_under_it,
            oversized_values_are_refused,
            concurrent_increments
        );
    };
    (@cases $factory:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $factory().await;
                $crate::$case(store).await;
            }
        )*
    };
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no event within 10 s"),
    }
}

async fn assert_no_event(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// Every write gets the next revision; keys keep create and mod revisions.
pub async fn revisions_and_versions(store: Arc<dyn Store>) {
    let start = store.status().await.unwrap().revision;
    let a = store.create(b("/a"), b("1")).await.unwrap();
    assert_eq!(a.mod_revision, start + 1);
    assert_eq!(a.create_revision, start + 1);
    assert_eq!(a.version, 1);
    let c = store.create(b("/c"), b("x")).await.unwrap();
    assert_eq!(c.mod_revision, start + 2);
    let a2 = store.update(b("/a"), b("2"), a.mod_revision).await.unwrap();
    assert_eq!(a2.mod_revision, start + 3);
    assert_eq!(a2.create_revision, a.create_revision);
    assert_eq!(a2.version, 2);
    let d = store.delete(b("/c"), None).await.unwrap();
    assert_eq!(d.revision, start + 4);
    assert_eq!(d.prev, c);
    assert_eq!(store.status().await.unwrap().revision, start + 4);
    let got = store.get(b"/a", None).await.unwrap();
    assert_eq!(got.kv, Some(a2));
    assert_eq!(got.revision, start + 4);
    // Failed writes do not consume revisions.
    assert!(store.create(b("/a"), b("again")).await.is_err());
    assert!(store.update(b("/a"), b("3"), a.mod_revision).await.is_err());
    assert_eq!(store.status().await.unwrap().revision, start + 4);
    // Recreating a deleted key starts a new generation.
    let c2 = store.create(b("/c"), b("y")).await.unwrap();
    assert_eq!(c2.create_revision, start + 5);
    assert_eq!(c2.version, 1);
}

pub async fn create_if_absent(store: Arc<dyn Store>) {
    let first = store.create(b("/k"), b("one")).await.unwrap();
    match store.create(b("/k"), b("two")).await {
        Err(Error::AlreadyExists { current }) => assert_eq!(*current, first),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.get(b"/k", None).await.unwrap().kv.unwrap().value,
        b("one")
    );
}

/// Guarded writes lose against a newer mod revision and report the winner.
pub async fn compare_and_swap_conflicts(store: Arc<dyn Store>) {
    let v1 = store.create(b("/cas"), b("v1")).await.unwrap();
    let v2 = store
        .update(b("/cas"), b("v2"), v1.mod_revision)
        .await
        .unwrap();
    match store.update(b("/cas"), b("stale"), v1.mod_revision).await {
        Err(Error::Conflict { expected, current }) => {
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(*current, v2);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    match store.delete(b("/cas"), Some(v1.mod_revision)).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current.value, b("v2")),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(b"/cas", None).await.unwrap().kv, Some(v2.clone()));
    assert!(matches!(
        store.update(b("/missing"), b("x"), 1).await,
        Err(Error::NotFound)
    ));
    store
        .update(b("/cas"), b("v3"), v2.mod_revision)
        .await
        .unwrap();
}

pub async fn delete_semantics(store: Arc<dyn Store>) {
    assert!(matches!(
        store.delete(b("/gone"), None).await,
        Err(Error::NotFound)
    ));
    let kv = store.create(b("/gone"), b("v")).await.unwrap();
    let d = store
        .delete(b("/gone"), Some(kv.mod_revision))
        .await
        .unwrap();
    assert_eq!(d.prev, kv);
    assert_eq!(store.get(b"/gone", None).await.unwrap().kv, None);
    assert!(matches!(
        store.delete(b("/gone"), None).await,
        Err(Error::NotFound)
    ));
}

pub async fn reads_at_past_revisions(store: Arc<dyn Store>) {
    let v1 = store.create(b("/p"), b("1")).await.unwrap();
    let v2 = store
        .update(b("/p"), b("2"), v1.mod_revision)
        .await
        .unwrap();
    let del = store.delete(b("/p"), None).await.unwrap();
    assert_eq!(
        store.get(b"/p", Some(v1.mod_revision)).await.unwrap().kv,
        Some(v1.clone())
    );
    assert_eq!(
        store.get(b"/p", Some(v2.mod_revision)).await.unwrap().kv,
        Some(v2)
    );
    assert_eq!(store.get(b"/p", Some(del.revision)).await.unwrap().kv, None);
    assert_eq!(
        store
            .get(b"/p", Some(v1.mod_revision - 1))
            .await
            .unwrap()
            .kv,
        None
    );
    let cur = store.status().await.unwrap().revision;
    assert!(matches!(
        store.get(b"/p", Some(cur + 10)).await,
        Err(Error::FutureRevision { .. })
    ));
}

/// Every page of one list is read at the first page's revision, even while
/// writes continue.
pub async fn paginated_list_sees_one_revision(store: Arc<dyn Store>) {
    for i in 0..50 {
        store
            .create(b(&format!("/list/{i:03}")), b("orig"))
            .await
            .unwrap();
    }
    store
        .create(b("/listx"), b("outside the prefix"))
        .await
        .unwrap();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                let key = b(&format!("/list/{i:03}"));
                let kv = store.get(&key, None).await.unwrap().kv.unwrap();
                store
                    .update(key, b("changed"), kv.mod_revision)
                    .await
                    .unwrap();
                store
                    .create(b(&format!("/list/new-{i:03}")), b("new"))
                    .await
                    .unwrap();
                if i % 5 == 0 {
                    store
                        .delete(b(&format!("/list/{i:03}")), None)
                        .await
                        .unwrap();
                }
                tokio::task::yield_now().await;
            }
        })
    };

    let first = store
        .range(RangeRequest {
            prefix: b("/list/"),
            limit: 7,
            ..Default::default()
        })
        .await
        .unwrap();
    let rev = first.revision;
    assert_eq!(first.kvs.len(), 7);
    assert!(first.more);
    assert_eq!(first.remaining, 43);
    let mut seen: Vec<_> = first.kvs.clone();
    let mut page = first;
    while page.more {
        tokio::time::sleep(Duration::from_millis(2)).await;
        page = store
            .range(RangeRequest {
                prefix: b("/list/"),
                start_after: Some(page.kvs.last().unwrap().key.clone()),
                limit: 7,
                revision: Some(rev),
            })
            .await
            .unwrap();
        assert_eq!(page.revision, rev);
        seen.extend(page.kvs.iter().cloned());
    }
    writer.await.unwrap();
    let keys: Vec<_> = seen.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<_> = (0..50).map(|i| b(&format!("/list/{i:03}"))).collect();
    assert_eq!(
        keys, expected,
        "pages must show exactly the keys as of revision {rev}"
    );
    assert!(seen
        .iter()
        .all(|kv| kv.value == b("orig") && kv.mod_revision <= rev));

    // The same list at the current revision sees the writes.
    let now = store
        .range(RangeRequest::prefix(b("/list/")))
        .await
        .unwrap();
    assert!(now.revision > rev);
    assert_eq!(now.kvs.len(), 90);
    assert!(!now.more);
}

/// A watch from R replays exactly the changes after R, then live ones, each
/// with its previous value.
pub async fn watch_replays_then_streams(store: Arc<dyn Store>) {
    let a1 = store.create(b("/w/a"), b("1")).await.unwrap();
    let r = a1.mod_revision;
    let a2 = store.update(b("/w/a"), b("2"), r).await.unwrap();
    let b1 = store.create(b("/w/b"), b("1")).await.unwrap();
    store.create(b("/other"), b("x")).await.unwrap();
    let del = store.delete(b("/w/a"), None).await.unwrap();

    let mut w = store.watch(b("/w/"), WatchStart::After(r)).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.clone(), e.prev.clone()),
        (EventKind::Put, a2.clone(), Some(a1))
    );
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.clone(), e.prev.clone()),
        (EventKind::Put, b1.clone(), None)
    );
    let e = next_event(&mut w).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.kv.key, b("/w/a"));
    assert_eq!(e.kv.mod_revision, del.revision);
    assert_eq!(e.prev, Some(a2));

    // Live events follow without gaps or duplicates.
    let b2 = store
        .update(b("/w/b"), b("2"), b1.mod_revision)
        .await
        .unwrap();
    let c = store.create(b("/w/c"), b("1")).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kv.clone(), e.prev.clone()), (b2, Some(b1)));
    let e = next_event(&mut w).await;
    assert_eq!(e.kv, c);
    assert_no_event(&mut w).await;
}

pub async fn watch_from_now_and_prefixes(store: Arc<dyn Store>) {
    store.create(b("/n/old"), b("1")).await.unwrap();
    let mut w = store.watch(b("/n/"), WatchStart::Now).await.unwrap();
    let mut all = store.watch(b("/"), WatchStart::Now).await.unwrap();
    store.create(b("/m/x"), b("1")).await.unwrap();
    let n = store.create(b("/n/new"), b("1")).await.unwrap();
    assert_eq!(next_event(&mut w).await.kv, n);
    assert_no_event(&mut w).await;
    assert_eq!(next_event(&mut all).await.kv.key, b("/m/x"));
    assert_eq!(next_event(&mut all).await.kv.key, b("/n/new"));
    // A watch from the current revision sees nothing old.
    let cur = store.status().await.unwrap().revision;
    let mut w2 = store.watch(b("/"), WatchStart::After(cur)).await.unwrap();
    assert_no_event(&mut w2).await;
    assert!(matches!(
        store.watch(b("/"), WatchStart::After(cur + 5)).await,
        Err(Error::FutureRevision { .. })
    ));
}

/// A watcher that does not read for a while still gets every change, once,
/// in order.
/// A watch reports progress past writes outside its prefix, and by the time
/// progress reaches a revision every matching event up to it is queued.
pub async fn watch_progress_covers_other_prefixes(store: Arc<dyn Store>) {
    let mut w = store.watch(b("/p/"), WatchStart::Now).await.unwrap();
    let mut progress = w.progress();
    let mine = store.create(b("/p/a"), b("1")).await.unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = store
            .create(b(&format!("/q/{i}")), b("x"))
            .await
            .unwrap()
            .mod_revision;
    }
    tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|r| *r >= last))
        .await
        .expect("progress reaches the last write elsewhere")
        .unwrap();
    let ev = w.try_next().expect("the matching event is queued").unwrap();
    assert_eq!(ev.kv.mod_revision, mine.mod_revision);
    assert!(
        w.try_next().is_none(),
        "nothing outside the prefix is delivered"
    );
}

pub async fn slow_watcher_misses_nothing(store: Arc<dyn Store>) {
    const WRITES: usize = 3000;
    let mut w = store.watch(b("/s/"), WatchStart::Now).await.unwrap();
    // One write at a time, so that each is its own commit: more commits than
    // any backend buffers for a watcher that is not reading.
    for i in 0..WRITES {
        store
            .create(b(&format!("/s/{i:05}")), b("v"))
            .await
            .unwrap();
        if i % 2 == 0 {
            store
                .create(b(&format!("/elsewhere/{i:05}")), b("v"))
                .await
                .unwrap();
        }
    }
    let mut last: Revision = 0;
    let mut count = 0;
    while count < WRITES {
        let e = next_event(&mut w).await;
        assert!(e.kv.mod_revision > last, "events out of order or repeated");
        last = e.kv.mod_revision;
        count += 1;
    }
    assert_no_event(&mut w).await;
}

/// After compaction to C, reads below C and watches from before C fail with
/// the distinct compacted error; the state at C stays readable.
pub async fn compacted_reads_and_watches_fail(store: Arc<dyn Store>) {
    let v1 = store.create(b("/c/a"), b("1")).await.unwrap();
    let v2 = store
        .update(b("/c/a"), b("2"), v1.mod_revision)
        .await
        .unwrap();
    let gone = store.create(b("/c/gone"), b("x")).await.unwrap();
    store.delete(b("/c/gone"), None).await.unwrap();
    let c = store.status().await.unwrap().revision;
    let v3 = store
        .update(b("/c/a"), b("3"), v2.mod_revision)
        .await
        .unwrap();
    store.compact(c).await.unwrap();
    assert_eq!(store.status().await.unwrap().compacted, c);

    let err = store.get(b"/c/a", Some(v1.mod_revision)).await.unwrap_err();
    assert!(err.is_compacted(), "got {err:?}");
    let err = store
        .range(RangeRequest {
            prefix: b("/c/"),
            revision: Some(c - 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.is_compacted(), "got {err:?}");
    match store
        .watch(b("/c/"), WatchStart::After(gone.mod_revision))
        .await
    {
        Err(e) => assert!(e.is_compacted(), "got {e:?}"),
        Ok(_) => panic!("watch from a compacted revision must fail"),
    }
    // Compacting again to the same or an older revision is refused.
    assert!(store.compact(c).await.unwrap_err().is_compacted());

    // The state at C and after it is intact.
    assert_eq!(
        store.get(b"/c/a", Some(c)).await.unwrap().kv,
        Some(v2.clone())
    );
    assert_eq!(store.get(b"/c/gone", Some(c)).await.unwrap().kv, None);
    assert_eq!(store.get(b"/c/a", None).await.unwrap().kv, Some(v3.clone()));
    let mut w = store.watch(b("/c/"), WatchStart::After(c)).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kv, e.prev), (v3, Some(v2)));
}

/// A watcher replaying history that gets compacted away ends with the
/// compacted error instead of skipping events.
pub async fn watch_ends_when_history_is_compacted_under_it(store: Arc<dyn Store>) {
    let first = store.create(b("/h/0"), b("v")).await.unwrap();
    for i in 1..3000 {
        store.create(b(&format!("/h/{i}")), b("v")).await.unwrap();
    }
    let mut w = store
        .watch(b("/h/"), WatchStart::After(first.mod_revision - 1))
        .await
        .unwrap();
    // Read a little, then compact far ahead of the watcher.
    let e = next_event(&mut w).await;
    assert_eq!(e.kv.mod_revision, first.mod_revision);
    let cur = store.status().await.unwrap().revision;
    store.compact(cur).await.unwrap();
    let mut last = e.kv.mod_revision;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(e))) => {
                assert_eq!(e.kv.mod_revision, last + 1, "events must not be skipped");
                last = e.kv.mod_revision;
                if last == cur {
                    // It had already read everything before the compaction.
                    break;
                }
            }
            Ok(Some(Err(e))) => {
                assert!(e.is_compacted(), "got {e:?}");
                break;
            }
            Ok(None) => panic!("watch ended without an error"),
            Err(_) => panic!("watch stalled"),
        }
    }
}

pub async fn oversized_values_are_refused(store: Arc<dyn Store>) {
    let before = store.status().await.unwrap().revision;
    let big = Bytes::from(vec![b'x'; MAX_VALUE_BYTES + 1]);
    match store.create(b("/big"), big.clone()).await {
        Err(Error::ValueTooLarge { size, limit }) => {
            assert_eq!(size, MAX_VALUE_BYTES + 1);
            assert_eq!(limit, MAX_VALUE_BYTES);
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(store.status().await.unwrap().revision, before);
    assert_eq!(store.get(b"/big", None).await.unwrap().kv, None);
    // Exactly at the limit is fine, and an oversized update changes nothing.
    let max = Bytes::from(vec![b'y'; MAX_VALUE_BYTES]);
    let kv = store.create(b("/big"), max.clone()).await.unwrap();
    assert!(matches!(
        store.update(b("/big"), big, kv.mod_revision).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(
        store.get(b"/big", None).await.unwrap().kv.unwrap().value,
        max
    );
}

/// 32 tasks × 200 read-modify-write increments of one key, every conflict
/// retried: the counter ends at exactly 6,400.
pub async fn concurrent_increments(store: Arc<dyn Store>) {
    const TASKS: u64 = 32;
    const INCREMENTS: u64 = 200;
    let key = b("/counter");
    store.create(key.clone(), b("0")).await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                let mut kv = store.get(&key, None).await.unwrap().kv.unwrap();
                for _ in 0..INCREMENTS {
                    loop {
                        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                        match store
                            .update(key.clone(), b(&(n + 1).to_string()), kv.mod_revision)
                            .await
                        {
                            Ok(new) => {
                                kv = new;
                                break;
                            }
                            Err(Error::Conflict { current, .. }) => {
                                conflicts += 1;
                                kv = *current;
                            }
                            Err(e) => panic!("update failed: {e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let kv = store.get(&key, None).await.unwrap().kv.unwrap();
    assert_eq!(kv.value, b(&(TASKS * INCREMENTS).to_string()));
    assert_eq!(kv.version, TASKS * INCREMENTS + 1);
    assert!(
        conflicts > 0,
        "32 concurrent writers of one key must have conflicted"
    );
    // Every version is in history, in order.
    let mut seen = BTreeMap::new();
    let mut w = store
        .watch(key.clone(), WatchStart::After(kv.create_revision))
        .await
        .unwrap();
    for _ in 0..TASKS * INCREMENTS {
        let e = next_event(&mut w).await;
        seen.insert(e.kv.version, e.kv.value);
    }
    assert_eq!(seen.len() as u64, TASKS * INCREMENTS);
    assert!(seen
        .iter()
        .all(|(version, value)| *value == b(&(version - 1).to_string())));
}
