//! Snapshots are consistent, restore keeps the revision, and a damaged
//! snapshot is refused without leaving anything behind.

use bytes::Bytes;
use kelson_store::{snapshot, EmbeddedStore, Options, RangeRequest, Store};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn options() -> Options {
    Options {
        compaction: None,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_taken_during_writes_restores_to_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        EmbeddedStore::open(dir.path().join("a.redb"), options())
            .await
            .unwrap(),
    );
    for i in 0..200 {
        store
            .create(b(&format!("/k/{i:03}")), b(&format!("v{i}")))
            .await
            .unwrap();
    }
    let kv = store.get(b"/k/000", None).await.unwrap().kv.unwrap();
    store
        .update(b("/k/000"), b("updated"), kv.mod_revision)
        .await
        .unwrap();
    store.delete(b("/k/001"), None).await.unwrap();
    store.compact(150).await.unwrap();

    // Keep writing while the snapshot is taken.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .create(b(&format!("/late/{i:03}")), b("x"))
                    .await
                    .unwrap();
            }
        })
    };
    let snap = dir.path().join("snap.db");
    let info = store
        .snapshot(std::fs::File::create(&snap).unwrap())
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(snapshot::verify(&snap).unwrap(), info);
    assert_eq!(info.compacted, 150);

    let restored_path = dir.path().join("restored/store.redb");
    let restored_info = snapshot::restore(&snap, &restored_path).unwrap();
    assert_eq!(restored_info.revision, info.revision);
    let restored = EmbeddedStore::open(&restored_path, options())
        .await
        .unwrap();
    let status = restored.status().await.unwrap();
    assert_eq!(status.revision, info.revision);
    assert_eq!(status.compacted, 150);
    // The restored store holds exactly what the original held at that revision.
    let want = store
        .range(RangeRequest {
            prefix: b("/"),
            revision: Some(info.revision),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = restored.range(RangeRequest::prefix(b("/"))).await.unwrap();
    assert_eq!(got.kvs, want.kvs);
    assert_eq!(
        restored
            .get(b"/k/000", None)
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        b("updated")
    );
    assert!(restored.get(b"/k/001", None).await.unwrap().kv.is_none());
    // History after the compacted revision survives too.
    assert!(restored
        .get(b"/k/199", Some(180))
        .await
        .unwrap()
        .kv
        .is_none());
    // New writes continue from the restored revision.
    let kv = restored.create(b("/after"), b("x")).await.unwrap();
    assert_eq!(kv.mod_revision, info.revision + 1);
}

#[tokio::test]
async fn damaged_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("a.redb"), options())
        .await
        .unwrap();
    for i in 0..20 {
        store
            .create(b(&format!("/k/{i}")), b("value"))
            .await
            .unwrap();
    }
    let snap = dir.path().join("snap.db");
    store
        .snapshot(std::fs::File::create(&snap).unwrap())
        .await
        .unwrap();
    let good = std::fs::read(&snap).unwrap();

    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &good[..good.len() - 10]).unwrap();
    let flipped = dir.path().join("flipped.db");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&flipped, &bad).unwrap();

    for file in [&truncated, &flipped] {
        let dest = dir.path().join("out/store.redb");
        let err = snapshot::restore(file, &dest).unwrap_err();
        assert!(
            matches!(err, kelson_store::Error::Corrupt(_)),
            "got {err:?}"
        );
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("out"))
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
    }
    // Restoring over an existing store is refused.
    let err = snapshot::restore(&snap, &dir.path().join("a.redb")).unwrap_err();
    assert!(err.to_string().contains("already exists"), "got {err}");
}
