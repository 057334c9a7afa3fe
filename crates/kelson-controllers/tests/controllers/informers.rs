//! Shared informers against a real API server: every subscriber hears the
//! same stored copy of an object, after the store has it, and a late
//! subscriber is replayed what is already there.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kelson_controllers::informers::{Informers, Notice};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;

use crate::support::{from_json, merge_patch, Harness};

fn pod(name: &str) -> Pod {
    from_json(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
}

async fn next(rx: &mut UnboundedReceiver<Notice<Pod>>) -> Notice<Pod> {
    tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("a notice within 10 s")
        .expect("the informer is running")
}

/// The next notice, which must be an Apply of `name`: (object, old).
async fn applied(
    rx: &mut UnboundedReceiver<Notice<Pod>>,
    name: &str,
) -> (Arc<Pod>, Option<Arc<Pod>>) {
    match next(rx).await {
        Notice::Apply { obj, old } if obj.metadata.name.as_deref() == Some(name) => (obj, old),
        other => panic!("expected an Apply of {name}, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribers_share_one_copy_and_late_ones_are_replayed() {
    let h = Harness::start().await;
    let pods = h.api::<Pod>();
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();

    let informers = Informers::new(h.client.clone());
    let mut first = informers.get::<Pod>().subscribe();
    let (a, old) = applied(&mut first, "a").await;
    assert!(old.is_none(), "a listed object is new to the subscriber");
    assert!(
        a.metadata.managed_fields.is_none(),
        "managedFields are dropped"
    );
    assert!(matches!(next(&mut first).await, Notice::Synced));

    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    let (b, old) = applied(&mut first, "b").await;
    assert!(old.is_none());
    // What a subscriber hears is already in the shared store, as that copy.
    let store = informers.get::<Pod>().store();
    let stored = store.get(&ObjectRef::new("b").within("default")).unwrap();
    assert!(Arc::ptr_eq(&stored, &b));

    // A late subscriber gets what is stored, then Synced.
    let mut late = informers.get::<Pod>().subscribe();
    let mut replayed = vec![applied_any(&mut late).await, applied_any(&mut late).await];
    replayed.sort();
    assert_eq!(replayed, ["a", "b"]);
    assert!(matches!(next(&mut late).await, Notice::Synced));

    // An update reaches both as the same object, with what came before.
    merge_patch(
        &pods,
        "b",
        serde_json::json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    let (b1, old1) = applied(&mut first, "b").await;
    let (b2, old2) = applied(&mut late, "b").await;
    assert!(Arc::ptr_eq(&b1, &b2), "one copy for every subscriber");
    assert_eq!(b1.metadata.labels.as_ref().unwrap()["x"], "y");
    assert!(Arc::ptr_eq(old1.as_ref().unwrap(), &b));
    assert!(Arc::ptr_eq(old2.as_ref().unwrap(), &b));

    pods.delete("a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    for rx in [&mut first, &mut late] {
        match next(rx).await {
            Notice::Delete(p) => assert_eq!(p.metadata.name.as_deref(), Some("a")),
            other => panic!("expected the delete of a, got {other:?}"),
        }
    }
    assert!(store.get(&ObjectRef::new("a").within("default")).is_none());

    drop(informers);
    h.stop().await;
}

async fn applied_any(rx: &mut UnboundedReceiver<Notice<Pod>>) -> String {
    match next(rx).await {
        Notice::Apply { obj, old: None } => obj.metadata.name.clone().unwrap_or_default(),
        other => panic!("expected a replayed Apply, got {other:?}"),
    }
}
