//! Automatic compaction keeps a store under constant churn bounded in size:
//! old history is removed and its space reused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kelson_store::{CompactionPolicy, EmbeddedStore, Options, RangeRequest, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_automatic_compaction_stays_bounded() {
    const KEYS: usize = 200;
    const WRITERS: usize = 16;
    const UPDATES: usize = 50_000;
    const VALUE: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        compaction: Some(CompactionPolicy {
            retention: Duration::from_millis(200),
            interval: Duration::from_millis(50),
        }),
        ..Options::default()
    };
    let store = Arc::new(
        EmbeddedStore::open(dir.path().join("s.redb"), options)
            .await
            .unwrap(),
    );
    let value = Bytes::from(vec![b'x'; VALUE]);
    let mut revs = Vec::new();
    for k in 0..KEYS {
        revs.push(
            store
                .create(Bytes::from(format!("/lease/{k}")), value.clone())
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let value = value.clone();
            let mut mine: Vec<(usize, u64)> =
                (w..KEYS).step_by(WRITERS).map(|k| (k, revs[k])).collect();
            tokio::spawn(async move {
                for i in 0..UPDATES / WRITERS {
                    let slot = i % mine.len();
                    let (k, rev) = mine[slot];
                    let kv = store
                        .update(Bytes::from(format!("/lease/{k}")), value.clone(), rev)
                        .await
                        .unwrap();
                    mine[slot].1 = kv.mod_revision;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let written = (UPDATES * VALUE) as u64;
    let status = store.status().await.unwrap();
    assert!(status.compacted > 0, "automatic compaction never ran");
    let size = store.disk_bytes().unwrap();
    eprintln!(
        "wrote {} MiB of values; file is {} MiB",
        written >> 20,
        size >> 20
    );
    assert!(
        size < written / 2,
        "file of {size} bytes after writing {written}: history is not reclaimed"
    );
    // The live data is intact.
    let all = store
        .range(RangeRequest::prefix(Bytes::from_static(b"/lease/")))
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), KEYS);
    assert!(all.kvs.iter().all(|kv| kv.value == value));
    // Old history is gone: reading before the compacted revision fails.
    assert!(store
        .get(b"/lease/0", Some(revs[0]))
        .await
        .unwrap_err()
        .is_compacted());

    // Reopening shrinks the file to about what the remaining history needs,
    // and keeps every live key and the revisions.
    // First let compaction pass the end of the churn (retention 200 ms).
    let end = store.status().await.unwrap().revision;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.status().await.unwrap().compacted < end {
        assert!(std::time::Instant::now() < deadline, "compaction stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The writer removes compacted records while idle and finishes the
    // rest when the store closes.
    let path = store.path().to_path_buf();
    let status = store.status().await.unwrap();
    Arc::try_unwrap(store)
        .ok()
        .expect("sole owner")
        .close()
        .await;
    let no_compaction = Options {
        compaction: None,
        ..Options::default()
    };
    let reopened = EmbeddedStore::open(&path, no_compaction).await.unwrap();
    let shrunk = reopened.disk_bytes().unwrap();
    eprintln!("after reopen the file is {} MiB", shrunk >> 20);
    assert!(
        shrunk < size / 2,
        "reopen did not reclaim space: {shrunk} of {size}"
    );
    assert_eq!(reopened.status().await.unwrap(), status);
    let again = reopened
        .range(RangeRequest::prefix(Bytes::from_static(b"/lease/")))
        .await
        .unwrap();
    assert_eq!(again.kvs, all.kvs);
}
