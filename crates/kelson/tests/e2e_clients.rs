//! End to end: the real `kelson server` driven by real client libraries, as
//! controllers and scripts use it: kube-rs (list, get, watch, server-side
//! apply, and a `kube::runtime::watcher` that relists after a 410 Gone) and
//! the Python `kubernetes` package (tests/python/client_e2e.py).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kelson_store::{EmbeddedStore, Options, Store};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

/// How long any single expected event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// Runs an async test body on a runtime of its own; the cluster is started
/// and dropped outside it (its helpers block).
fn run<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// A kube-rs client from the kubeconfig the server wrote (client certificate,
/// the cluster CA, https://127.0.0.1:port).
async fn client(c: &Cluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert!(
        config.cluster_url.host() == Some("127.0.0.1"),
        "tests talk to 127.0.0.1 only, not {}",
        config.cluster_url
    );
    Client::try_from(config).unwrap()
}

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    if !labels.is_empty() {
        cm.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// The API error a request failed with (panics on success or on a transport
/// error, which no test here expects).
fn api_error<T: std::fmt::Debug>(r: kube::Result<T>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

fn data_of(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

#[test]
fn kube_rs_list_and_get() {
    let c = Cluster::start();
    run(async {
        let client = client(&c).await;
        create_namespace(&client, "e2e").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "e2e");
        for (name, app) in [("cm-a", "demo"), ("cm-b", "demo"), ("cm-c", "other")] {
            cms.create(
                &PostParams::default(),
                &config_map(name, &[("app", app)], &[("name", name)]),
            )
            .await
            .unwrap();
        }

        // A label-selected list, typed into k8s-openapi's ConfigMap.
        let demo = cms
            .list(&ListParams::default().labels("app=demo"))
            .await
            .unwrap();
        let names: Vec<_> = demo.items.iter().map(|cm| cm.name_any()).collect();
        assert_eq!(names, ["cm-a", "cm-b"]);
        assert!(demo
            .metadata
            .resource_version
            .is_some_and(|rv| !rv.is_empty()));

        // Pages of one: a continue token leads to the next page, the last
        // page has none.
        let mut seen = Vec::new();
        let mut lp = ListParams::default().limit(1);
        loop {
            let page = cms.list(&lp).await.unwrap();
            assert!(
                page.items.len() <= 1,
                "limit=1 returned {}",
                page.items.len()
            );
            seen.extend(page.items.iter().map(|cm| cm.name_any()));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
        // The controller manager may have added its root CA meanwhile.
        seen.retain(|n| n != "kube-root-ca.crt");
        assert_eq!(seen, ["cm-a", "cm-b", "cm-c"]);

        let a = cms.get("cm-a").await.unwrap();
        assert_eq!(data_of(&a)["name"], "cm-a");
        assert_eq!(a.namespace().as_deref(), Some("e2e"));
        assert!(a.uid().is_some_and(|u| !u.is_empty()));
        assert!(a.creation_timestamp().is_some());

        let missing = api_error(cms.get("nope").await);
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        assert!(cms.get_opt("nope").await.unwrap().is_none());

        // Pods: created in one namespace, seen in a namespaced and in an
        // all-namespaces list, with the defaults the server fills in.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "e2e");
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let listed = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        let all = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(all
            .items
            .iter()
            .any(|p| p.name_any() == "web" && p.namespace().as_deref() == Some("e2e")));
        let got = pods.get("web").await.unwrap();
        let spec = got.spec.unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.25"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );

        let dup = api_error(pods.create(&PostParams::default(), &pod).await);
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

        pods.delete("web", &DeleteParams::default()).await.unwrap();
        assert!(pods.get_opt("web").await.unwrap().is_none());
    });
}

/// The next watch event that is not a bookmark, within `EVENT_WAIT`.
async fn next_event<S>(stream: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    loop {
        let ev = tokio::time::timeout(EVENT_WAIT, stream.next())
            .await
            .expect("no watch event in time")
            .expect("watch stream ended")
            .expect("watch stream failed");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

#[test]
fn kube_rs_watch_sees_changes() {
    let c = Cluster::start();
    run(async {
        let client = client(&c).await;
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let wp = WatchParams::default().labels("test=watch").timeout(60);
        let mut stream = cms.watch(&wp, &rv).await.unwrap().boxed();

        let created = cms
            .create(
                &PostParams::default(),
                &config_map("w", &[("test", "watch")], &[("v", "1")]),
            )
            .await
            .unwrap();
        // Not selected: must not show up.
        cms.create(&PostParams::default(), &config_map("quiet", &[], &[]))
            .await
            .unwrap();
        let patched = cms
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": "2"}})),
            )
            .await
            .unwrap();
        cms.delete("w", &DeleteParams::default()).await.unwrap();

        match next_event(&mut stream).await {
            WatchEvent::Added(cm) => {
                assert_eq!(cm.name_any(), "w");
                assert_eq!(data_of(&cm)["v"], "1");
                assert_eq!(cm.resource_version(), created.resource_version());
            }
            other => panic!("expected ADDED w, got {other:?}"),
        }
        match next_event(&mut stream).await {
            WatchEvent::Modified(cm) => {
                assert_eq!(cm.name_any(), "w");
                assert_eq!(data_of(&cm)["v"], "2");
                assert_eq!(cm.resource_version(), patched.resource_version());
            }
            other => panic!("expected MODIFIED w, got {other:?}"),
        }
        match next_event(&mut stream).await {
            WatchEvent::Deleted(cm) => {
                assert_eq!(cm.name_any(), "w");
                // The last state, at the deletion's resourceVersion.
                assert_eq!(data_of(&cm)["v"], "2");
                let del: u64 = cm.resource_version().unwrap().parse().unwrap();
                let mod_: u64 = patched.resource_version().unwrap().parse().unwrap();
                assert!(del > mod_, "delete rv {del} not after update rv {mod_}");
            }
            other => panic!("expected DELETED w, got {other:?}"),
        }
    });
}

#[test]
fn kube_rs_server_side_apply() {
    let c = Cluster::start();
    run(async {
        let client = client(&c).await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let mine = PatchParams::apply("kelson-test");
        let applied = cms
            .patch(
                "ssa",
                &mine,
                &Patch::Apply(json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "ssa"},
                    "data": {"a": "1", "b": "1"}
                })),
            )
            .await
            .unwrap();
        assert_eq!(data_of(&applied)["a"], "1");
        let mf = applied.managed_fields();
        let entry = mf
            .iter()
            .find(|m| m.manager.as_deref() == Some("kelson-test"))
            .unwrap_or_else(|| panic!("no managedFields entry for kelson-test: {mf:?}"));
        assert_eq!(entry.operation.as_deref(), Some("Apply"));
        assert_eq!(entry.api_version.as_deref(), Some("v1"));
        assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
        let fields = serde_json::to_value(entry.fields_v1.as_ref().unwrap()).unwrap();
        assert!(fields["f:data"]["f:a"].is_object(), "{fields}");
        assert!(fields["f:data"]["f:b"].is_object(), "{fields}");

        // Another manager setting a field kelson-test owns: a conflict that
        // names the owner.
        let theirs = PatchParams::apply("other-manager");
        let change_a = Patch::Apply(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ssa"},
            "data": {"a": "2"}
        }));
        let conflict = api_error(cms.patch("ssa", &theirs, &change_a).await);
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
        assert!(
            conflict.message.contains("kelson-test"),
            "conflict message should name the owner: {}",
            conflict.message
        );
        assert_eq!(data_of(&cms.get("ssa").await.unwrap())["a"], "1");

        // Forced: the field changes hands.
        let forced = cms
            .patch("ssa", &theirs.clone().force(), &change_a)
            .await
            .unwrap();
        assert_eq!(data_of(&forced)["a"], "2");
        assert_eq!(data_of(&forced)["b"], "1");
        let owners = |field: &str| -> Vec<String> {
            forced
                .managed_fields()
                .iter()
                .filter(|m| {
                    let f = serde_json::to_value(m.fields_v1.as_ref()).unwrap();
                    f["f:data"][field].is_object()
                })
                .filter_map(|m| m.manager.clone())
                .collect()
        };
        assert_eq!(owners("f:a"), ["other-manager"]);
        assert_eq!(owners("f:b"), ["kelson-test"]);

        // A typed object applied the way controllers do, and read back typed.
        let deploy: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}
                }
            }
        }))
        .unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client, "default");
        let d = deployments
            .patch("web", &mine, &Patch::Apply(&deploy))
            .await
            .unwrap();
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        // Defaults the server fills in.
        assert_eq!(
            spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
            Some("RollingUpdate")
        );
        assert_eq!(spec.revision_history_limit, Some(10));
        assert!(d
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("kelson-test")
                && m.operation.as_deref() == Some("Apply")));
        // Applying the same configuration again changes nothing.
        let again = deployments
            .patch("web", &mine, &Patch::Apply(&deploy))
            .await
            .unwrap();
        assert_eq!(again.resource_version(), d.resource_version());
    });
}

/// Compacts the stopped cluster's store past every revision it has: one
/// write and its deletion outside the API's keys, then compaction to that
/// revision, so any resourceVersion a client holds is now too old.
async fn compact_offline(c: &Cluster) -> u64 {
    let options = Options {
        compaction: None,
        ..Options::default()
    };
    let store = EmbeddedStore::open(c.store_path(), options).await.unwrap();
    let key = Bytes::from_static(b"/kelson-e2e/compaction-marker");
    store
        .create(key.clone(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    store.delete(key, None).await.unwrap();
    let rev = store.status().await.unwrap().revision;
    store.compact(rev).await.unwrap();
    store.close().await;
    rev
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String),
    Delete(String),
    /// An error the watcher reported, with the API status code if any.
    Error(Option<u16>, String),
}

fn seen(ev: Result<watcher::Event<ConfigMap>, watcher::Error>) -> Seen {
    match ev {
        Ok(watcher::Event::Init) => Seen::Init,
        Ok(watcher::Event::InitApply(cm)) => Seen::InitApply(cm.name_any()),
        Ok(watcher::Event::InitDone) => Seen::InitDone,
        Ok(watcher::Event::Apply(cm)) => Seen::Apply(cm.name_any()),
        Ok(watcher::Event::Delete(cm)) => Seen::Delete(cm.name_any()),
        Err(watcher::Error::WatchError(status)) => Seen::Error(Some(status.code), status.message),
        Err(
            watcher::Error::WatchStartFailed(kube::Error::Api(status))
            | watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchFailed(kube::Error::Api(status)),
        ) => Seen::Error(Some(status.code), status.message),
        Err(e) => Seen::Error(None, e.to_string()),
    }
}

/// Waits for the watcher to report `want`; returns everything seen on the way.
async fn wait_for(rx: &mut mpsc::UnboundedReceiver<Seen>, want: &Seen) -> Vec<Seen> {
    let mut log = Vec::new();
    loop {
        match tokio::time::timeout(EVENT_WAIT, rx.recv()).await {
            Ok(Some(ev)) => {
                let done = &ev == want;
                log.push(ev);
                if done {
                    return log;
                }
            }
            Ok(None) => panic!("watcher ended; saw {log:?}"),
            Err(_) => panic!("watcher did not report {want:?} in time; saw {log:?}"),
        }
    }
}

#[test]
fn kube_rs_watcher_relists_after_410_gone() {
    let mut c = Cluster::start();
    run(async {
        let client = client(&c).await;
        create_namespace(&client, "relist").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "relist");
        cms.create(
            &PostParams::default(),
            &config_map("first", &[("test", "relist")], &[]),
        )
        .await
        .unwrap();

        let (tx, mut rx) = mpsc::unbounded_channel();
        // Only the test's own objects: the controller manager adds its root
        // CA to every namespace meanwhile.
        let stream = watcher(
            cms.clone(),
            watcher::Config::default().labels("test=relist"),
        )
        .default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if tx.send(seen(ev)).is_err() {
                    return;
                }
            }
        });

        let log = wait_for(&mut rx, &Seen::InitDone).await;
        assert_eq!(
            log,
            [Seen::Init, Seen::InitApply("first".into()), Seen::InitDone]
        );
        let before = cms
            .create(
                &PostParams::default(),
                &config_map("before", &[("test", "relist")], &[]),
            )
            .await
            .unwrap();
        wait_for(&mut rx, &Seen::Apply("before".into())).await;
        let old_rv = before.resource_version().unwrap();

        // Compact the store past everything the watcher has seen. The store
        // compacts on its own only after minutes of history, and only inside
        // the server; so compact it while the server is stopped.
        c.stop();
        let compacted = compact_offline(&c).await;
        c.boot();

        // The server now answers a watch from the old resourceVersion with
        // 410 Gone (an ERROR event, as upstream's watch does).
        let mut direct = cms
            .watch(&WatchParams::default().timeout(10), &old_rv)
            .await
            .unwrap()
            .boxed();
        match next_event(&mut direct).await {
            WatchEvent::Error(status) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                assert!(
                    status.message.contains("too old resource version"),
                    "{}",
                    status.message
                );
            }
            other => panic!("watch from compacted rv {old_rv} (compacted {compacted}): {other:?}"),
        }
        drop(direct);

        // The watcher hits the same 410 when it reconnects, and relists.
        let log = wait_for(&mut rx, &Seen::InitDone).await;
        let gone = log
            .iter()
            .position(|e| matches!(e, Seen::Error(Some(410), _)))
            .unwrap_or_else(|| panic!("watcher never reported 410 Gone: {log:?}"));
        let relist = log[gone..]
            .iter()
            .position(|e| e == &Seen::Init)
            .unwrap_or_else(|| panic!("no relist after the 410: {log:?}"));
        let mut listed: Vec<_> = log[gone + relist..]
            .iter()
            .filter_map(|e| match e {
                Seen::InitApply(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        listed.sort();
        assert_eq!(listed, ["before", "first"], "{log:?}");

        // And it goes on watching from the relist.
        cms.create(
            &PostParams::default(),
            &config_map("after", &[("test", "relist")], &[]),
        )
        .await
        .unwrap();
        wait_for(&mut rx, &Seen::Apply("after".into())).await;
        cms.delete("before", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(&mut rx, &Seen::Delete("before".into())).await;

        task.abort();
        let _ = task.await;
        let names: Vec<_> = cms
            .list(&ListParams::default().labels("test=relist"))
            .await
            .unwrap()
            .items
            .iter()
            .map(|cm| cm.name_any())
            .collect();
        assert_eq!(names, ["after", "first"]);
    });
}

/// The Python interpreter with the `kubernetes` package: $KELSON_TEST_PYTHON,
/// or the venv `scripts/deps.sh test` creates.
fn python() -> PathBuf {
    std::env::var_os("KELSON_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kelson-test/pyenv/bin/python"))
}

#[test]
fn python_kubernetes_client() {
    let py = python();
    assert!(
        py.exists(),
        "{} not found: run `scripts/deps.sh test` (or set KELSON_TEST_PYTHON)",
        py.display()
    );
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_e2e.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(c.kubeconfig())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client test failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("python client e2e: ok"), "{stdout}");
}
