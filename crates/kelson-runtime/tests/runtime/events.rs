//! The event recorder against a real API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kelson_runtime::events::{EventType, Recorder};
use kelson_runtime::testing::TestCluster;
use kube::api::{ListParams, PostParams};
use kube::Api;

async fn events_about(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut list = api
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items;
    // Field selectors on events may be unsupported: filter here as well.
    list.retain(|e| e.involved_object.name.as_deref() == Some(name));
    list.sort_by_key(|e| e.metadata.name.clone());
    list
}

/// Runs kubectl against the cluster; None when kubectl is not installed.
fn kubectl(cluster: &TestCluster, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_counted_and_messages_kept_apart() {
    let cluster = TestCluster::start().await.unwrap();
    let admin = cluster.admin_client("test").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("web-1".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let obj = kelson_runtime::events::object_reference(&cm);

    let client = cluster
        .component_client("system:kube-scheduler", &[], "kelson-scheduler")
        .await
        .unwrap();
    let recorder = Recorder::new(client, "default-scheduler", "node-1");
    let msg = "Successfully assigned default/web-1 to node-1";
    recorder.event(&obj, EventType::Normal, "Scheduled", msg);
    // Timestamps have whole seconds: let the repeat land in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    recorder.event(&obj, EventType::Normal, "Scheduled", msg);
    recorder.flush().await;

    let events = events_about(&admin, "default", "web-1").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.count, Some(2));
    assert!(e.last_timestamp.as_ref().unwrap().0 > e.first_timestamp.as_ref().unwrap().0);
    assert_eq!(e.reason.as_deref(), Some("Scheduled"));
    assert_eq!(e.message.as_deref(), Some(msg));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    let name = e.metadata.name.as_deref().unwrap();
    let (prefix, suffix) = name.split_once('.').unwrap();
    assert_eq!(prefix, "web-1");
    assert_eq!(suffix.len(), 16, "{name}");
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
    let o = &e.involved_object;
    assert_eq!(o.api_version.as_deref(), Some("v1"));
    assert_eq!(o.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(o.name.as_deref(), Some("web-1"));
    assert_eq!(o.namespace.as_deref(), Some("default"));
    assert_eq!(o.uid, cm.metadata.uid);
    assert_eq!(o.resource_version, cm.metadata.resource_version);
    let src = e.source.as_ref().unwrap();
    assert_eq!(src.component.as_deref(), Some("default-scheduler"));
    assert_eq!(src.host.as_deref(), Some("node-1"));
    assert_eq!(e.reporting_component.as_deref(), Some("default-scheduler"));
    assert_eq!(e.reporting_instance.as_deref(), Some("node-1"));

    // A different message is a different Event.
    recorder.event(&obj, EventType::Warning, "Scheduled", "something else");
    recorder.flush().await;
    let events = events_about(&admin, "default", "web-1").await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let warning = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .unwrap();
    assert_eq!(warning.count, Some(1));
    assert_eq!(warning.message.as_deref(), Some("something else"));

    // As `kubectl get events` lists them, where kubectl is installed.
    if let Some(out) = kubectl(&cluster, &["get", "events", "-n", "default"]) {
        let line = out
            .lines()
            .find(|l| l.contains("Successfully assigned"))
            .unwrap_or_else(|| panic!("{out}"));
        let cols: Vec<_> = line.split_whitespace().collect();
        assert_eq!(
            &cols[1..4],
            ["Normal", "Scheduled", "configmap/web-1"],
            "{out}"
        );
        assert!(out.contains("Warning"), "{out}");
    }
    if let Some(out) = kubectl(&cluster, &["describe", "configmap", "web-1"]) {
        assert!(out.contains("default-scheduler"), "{out}");
        assert!(out.contains("(x2 over"), "{out}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_objects_get_events_in_default() {
    let cluster = TestCluster::start().await.unwrap();
    let admin = cluster.admin_client("test").await.unwrap();
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            uid: Some("6f1d6f55-0000-4000-8000-000000000001".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let recorder = Recorder::new(admin.clone(), "kubelet", "node-1");
    recorder.event_for(&node, EventType::Normal, "Starting", "Starting kubelet.");
    recorder.flush().await;
    let events = events_about(&admin, "default", "node-1").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(events[0].involved_object.namespace, None);
    cluster.stop().await;
}
