//! The DaemonSet controller against a real API server. No scheduler or
//! kubelet runs: pods stay unbound and are told apart by the node affinity
//! the controller gives them (or bound through pods/binding), and the tests
//! set pod status as a kubelet would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::support::{
    controller_ref, create, create_node, events_for, eventually, live_pods_matching, merge_patch,
    patch_pod_status, ready_up, wait_event, wait_events, Harness,
};

/// A cluster running the DaemonSet controller, with plain nodes `nodes`.
async fn start(nodes: &[&str]) -> (Harness, Api<DaemonSet>, Api<Pod>) {
    let mut h = Harness::start().await;
    h.spawn(kelson_controllers::daemonset::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    for n in nodes {
        create_node(&h.client, n).await;
    }
    let (dss, pods) = (h.api(), h.api());
    (h, dss, pods)
}

/// Creates DaemonSet `name` with `spec_extra` in its spec and
/// `template_extra` in its pod template's spec.
async fn daemon_set(
    dss: &Api<DaemonSet>,
    name: &str,
    spec_extra: serde_json::Value,
    template_extra: serde_json::Value,
) -> DaemonSet {
    let mut template_spec = json!({"containers": [{"name": "agent", "image": "agent:1"}]});
    merge(&mut template_spec, template_extra);
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": template_spec}
    });
    merge(&mut spec, spec_extra);
    create(dss, json!({"metadata": {"name": name}, "spec": spec})).await
}

fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), extra) {
        a.extend(b);
    }
}

/// The node a daemon pod is for: its nodeName, else its affinity term.
fn target(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [req] = term.match_fields.as_deref()? else {
        return None;
    };
    (req.key == "metadata.name" && req.operator == "In")
        .then(|| req.values.clone()?.into_iter().next())
        .flatten()
}

/// Live (not terminating) pods of DaemonSet `app`, by target node.
async fn pods_by_node(api: &Api<Pod>, app: &str) -> BTreeMap<String, Vec<Pod>> {
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in live_pods_matching(api, &format!("app={app}")).await {
        out.entry(target(&p).unwrap_or_default())
            .or_default()
            .push(p);
    }
    out
}

/// Waits until the live pods of `app`, by node, satisfy `ok`.
async fn wait_pods(
    api: &Api<Pod>,
    app: &str,
    what: &str,
    ok: impl Fn(&BTreeMap<String, Vec<Pod>>) -> bool,
) -> BTreeMap<String, Vec<Pod>> {
    eventually(20, what, || async {
        let m = pods_by_node(api, app).await;
        ok(&m).then_some(m)
    })
    .await
}

/// Waits until `app` has pods on exactly `nodes`.
async fn wait_nodes(
    api: &Api<Pod>,
    app: &str,
    what: &str,
    nodes: &[&str],
) -> BTreeMap<String, Vec<Pod>> {
    let want = BTreeSet::from_iter(nodes.iter().copied());
    wait_pods(api, app, what, |m| nodes_of(m) == want).await
}

/// Waits for a pod of `app` on `node`, and returns the first.
async fn wait_pod_on(api: &Api<Pod>, app: &str, node: &str) -> Pod {
    let m = wait_pods(api, app, &format!("a pod on {node}"), |m| {
        m.contains_key(node)
    })
    .await;
    m[node][0].clone()
}

fn nodes_of(m: &BTreeMap<String, Vec<Pod>>) -> BTreeSet<&str> {
    m.keys().map(String::as_str).collect()
}

async fn patch_node(client: &Client, name: &str, patch: serde_json::Value) {
    merge_patch(&Api::<Node>::all(client.clone()), name, patch).await;
}

async fn delete_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.delete(name, &DeleteParams::default()).await.unwrap();
}

/// (desired, current, misscheduled, ready, updated, available, unavailable)
/// once observedGeneration caught up.
async fn counts(api: &Api<DaemonSet>, name: &str) -> Option<[i32; 7]> {
    let ds = api.get(name).await.unwrap();
    let s = ds.status?;
    (s.observed_generation >= ds.metadata.generation).then_some([
        s.desired_number_scheduled,
        s.current_number_scheduled,
        s.number_misscheduled,
        s.number_ready,
        s.updated_number_scheduled.unwrap_or(0),
        s.number_available.unwrap_or(0),
        s.number_unavailable.unwrap_or(0),
    ])
}

async fn wait_counts(api: &Api<DaemonSet>, name: &str, want: [i32; 7]) {
    let what = format!("status {want:?}");
    eventually(20, &what, || async {
        (counts(api, name).await == Some(want)).then_some(())
    })
    .await;
}

/// A strategic-merge patch setting the agent container's image tag.
fn image(tag: &str) -> Patch<serde_json::Value> {
    Patch::Strategic(
        json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": format!("agent:{tag}")}]}}}}),
    )
}

fn hash_of(p: &Pod) -> String {
    p.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_node_following_nodes_as_they_come_and_go() {
    let (h, dss, pods) = start(&["n1", "n2", "n3"]).await;
    let ds = daemon_set(&dss, "agent", json!({}), json!({})).await;
    let uid = ds.uid().unwrap();

    let by_node = wait_nodes(&pods, "agent", "a pod per node", &["n1", "n2", "n3"]).await;
    let revisions: Api<ControllerRevision> = h.api();
    let revs = revisions.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(revs.len(), 1);
    let rev = &revs[0];
    assert_eq!(rev.revision, 1);
    let hash = rev.labels()["controller-revision-hash"].clone();
    assert_eq!(rev.name_any(), format!("agent-{hash}"));
    assert_eq!(rev.labels()["app"], "agent");
    assert_eq!(rev.owner_references()[0].uid, uid);
    for (node, ps) in &by_node {
        assert_eq!(ps.len(), 1, "one pod on {node}");
        let p = &ps[0];
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(hash_of(p), hash);
        let owner = controller_ref(p);
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DaemonSet", uid.as_str())
        );
        let tolerations: BTreeSet<(String, String)> = p
            .spec
            .as_ref()
            .unwrap()
            .tolerations
            .iter()
            .flatten()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.effect.clone().unwrap_or_default(),
                )
            })
            .collect();
        for want in [
            ("node.kubernetes.io/not-ready", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ] {
            assert!(
                tolerations.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} in {tolerations:?}"
            );
        }
    }
    wait_counts(&dss, "agent", [3, 3, 0, 0, 3, 0, 3]).await;

    // A scheduler binds one pod; the kubelets report all Running and Ready.
    let admin = h.cluster.admin_client("test").await.unwrap();
    let admin_pods: Api<Pod> = Api::namespaced(admin, "default");
    let n1_pod = by_node["n1"][0].name_any();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": n1_pod},
        "target": {"kind": "Node", "name": "n1"}
    });
    admin_pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &n1_pod,
            &PostParams::default(),
            &binding,
        )
        .await
        .unwrap();
    ready_up(&pods, by_node.values().flatten()).await;
    wait_counts(&dss, "agent", [3, 3, 0, 3, 3, 3, 0]).await;
    let bound = pods.get(&n1_pod).await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("n1"));

    // A new node gets a pod; when it goes, its still unscheduled pod goes
    // with it (pod GC would take a bound one).
    create_node(&h.client, "n4").await;
    wait_pod_on(&pods, "agent", "n4").await;
    wait_counts(&dss, "agent", [4, 4, 0, 3, 4, 3, 1]).await;
    delete_node(&h.client, "n4").await;
    wait_nodes(&pods, "agent", "n4's pod deleted", &["n1", "n2", "n3"]).await;
    wait_counts(&dss, "agent", [3, 3, 0, 3, 3, 3, 0]).await;

    let events = wait_events(&h.client, "agent", 10, "events", |e| {
        let creates = e.iter().filter(|(r, _)| r == "SuccessfulCreate").count();
        let deletes = e.iter().filter(|(r, _)| r == "SuccessfulDelete").count();
        creates == 4 && deletes == 1
    })
    .await;
    for (reason, message) in &events {
        match reason.as_str() {
            "SuccessfulCreate" => assert!(message.starts_with("Created pod: agent-"), "{message}"),
            "SuccessfulDelete" => assert!(message.starts_with("Deleted pod: agent-"), "{message}"),
            other => panic!("unexpected event {other}: {message}"),
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_labels_decide_the_nodes() {
    let (h, dss, pods) = start(&["m1"]).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    create(
        &nodes,
        json!({"metadata": {"name": "w1", "labels": {"role": "worker"}}}),
    )
    .await;
    daemon_set(
        &dss,
        "sel",
        json!({}),
        json!({"nodeSelector": {"role": "worker"}}),
    )
    .await;
    wait_nodes(&pods, "sel", "a pod on w1 only", &["w1"]).await;
    wait_counts(&dss, "sel", [1, 1, 0, 0, 1, 0, 1]).await;

    // Relabelling: m1 joins, w1 leaves.
    patch_node(
        &h.client,
        "m1",
        json!({"metadata": {"labels": {"role": "worker"}}}),
    )
    .await;
    wait_pod_on(&pods, "sel", "m1").await;
    patch_node(
        &h.client,
        "w1",
        json!({"metadata": {"labels": {"role": null}}}),
    )
    .await;
    wait_nodes(&pods, "sel", "w1's pod deleted", &["m1"]).await;
    wait_counts(&dss, "sel", [1, 1, 0, 0, 1, 0, 1]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_keep_new_pods_away_and_no_execute_evicts() {
    let (h, dss, pods) = start(&["t1", "t2"]).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    create(
        &nodes,
        json!({"metadata": {"name": "t3"}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    )
    .await;
    daemon_set(&dss, "tnt", json!({}), json!({})).await;
    wait_nodes(&pods, "tnt", "pods on t1 and t2, none on t3", &["t1", "t2"]).await;
    wait_counts(&dss, "tnt", [2, 2, 0, 0, 2, 0, 2]).await;

    // NoSchedule: the pod already there stays, but no longer counts as
    // desired.
    patch_node(
        &h.client,
        "t1",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    )
    .await;
    wait_counts(&dss, "tnt", [1, 1, 1, 0, 1, 0, 1]).await;
    assert!(pods_by_node(&pods, "tnt").await.contains_key("t1"));

    // NoExecute: the pod goes.
    patch_node(
        &h.client,
        "t2",
        json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}}),
    )
    .await;
    wait_nodes(&pods, "tnt", "t2's pod evicted", &["t1"]).await;
    wait_counts(&dss, "tnt", [0, 0, 1, 0, 0, 0, 0]).await;

    // A DaemonSet tolerating the taints runs everywhere.
    daemon_set(
        &dss,
        "tol",
        json!({}),
        json!({"tolerations": [{"operator": "Exists"}]}),
    )
    .await;
    wait_nodes(
        &pods,
        "tol",
        "tolerant pods everywhere",
        &["t1", "t2", "t3"],
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_surplus_pods_are_deleted() {
    let (h, dss, pods) = start(&["f1"]).await;
    daemon_set(&dss, "fl", json!({}), json!({})).await;
    let first = wait_pod_on(&pods, "fl", "f1").await;

    // The kubelet reports the pod Failed: it is replaced.
    patch_pod_status(&pods, &first.name_any(), json!({"phase": "Failed"}))
        .await
        .unwrap();
    let second = wait_pods(&pods, "fl", "a replacement", |m| {
        m.get("f1")
            .is_some_and(|ps| ps.len() == 1 && ps[0].name_any() != first.name_any())
    })
    .await["f1"][0]
        .clone();
    let want = format!(
        "Found failed daemon pod default/{} on node f1, will try to kill it",
        first.name_any()
    );
    wait_event(&h.client, "fl", 10, "FailedDaemonPod", |m| m == want).await;

    // A matching orphan for the same node is adopted, then deleted as the
    // younger of two.
    let mut extra = second.clone();
    extra.metadata = kube::api::ObjectMeta {
        name: Some("zz-extra".into()),
        labels: second.metadata.labels.clone(),
        ..Default::default()
    };
    extra.status = None;
    pods.create(&PostParams::default(), &extra).await.unwrap();
    wait_pods(&pods, "fl", "the surplus pod deleted", |m| {
        m.get("f1").is_some_and(|ps| {
            let names: Vec<String> = ps.iter().map(|p| p.name_any()).collect();
            names == [second.name_any()]
        })
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_honours_max_unavailable_and_undo_restores() {
    let (h, dss, pods) = start(&["r1", "r2", "r3", "r4"]).await;
    let revisions: Api<ControllerRevision> = h.api();
    daemon_set(
        &dss,
        "roll",
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}),
        json!({}),
    )
    .await;
    let all = BTreeSet::from(["r1", "r2", "r3", "r4"]);
    let first = wait_nodes(&pods, "roll", "four pods", &["r1", "r2", "r3", "r4"]).await;
    let old_hash = hash_of(&first["r1"][0]);
    ready_up(&pods, first.values().flatten()).await;
    wait_counts(&dss, "roll", [4, 4, 0, 4, 4, 4, 0]).await;

    // New image: pods are replaced, never more than 2 nodes without an
    // available pod. Acting as the kubelets, new pods become ready as soon
    // as they appear.
    dss.patch("roll", &PatchParams::default(), &image("2"))
        .await
        .unwrap();
    let min_available = AtomicUsize::new(4);
    let min_available = &min_available;
    let new_hash = eventually(30, "all pods replaced", || async {
        let m = pods_by_node(&pods, "roll").await;
        let available = m
            .values()
            .filter(|ps| ps.iter().any(crate::support::pod_is_ready))
            .count();
        min_available.fetch_min(available, Ordering::SeqCst);
        ready_up(
            &pods,
            m.values().flatten().filter(|p| hash_of(p) != old_hash),
        )
        .await;
        let hashes: BTreeSet<String> = m.values().flatten().map(hash_of).collect();
        (nodes_of(&m) == all && hashes.len() == 1 && !hashes.contains(&old_hash))
            .then(|| hashes.into_iter().next().unwrap_or_default())
    })
    .await;
    let min_available = min_available.load(Ordering::SeqCst);
    assert!(
        min_available >= 2,
        "at most 2 unavailable, saw {min_available} available"
    );
    wait_counts(&dss, "roll", [4, 4, 0, 4, 4, 4, 0]).await;
    let mut revs = revisions.list(&ListParams::default()).await.unwrap().items;
    revs.sort_by_key(|r| r.revision);
    let summary: Vec<(i64, String)> = revs
        .iter()
        .map(|r| (r.revision, r.labels()["controller-revision-hash"].clone()))
        .collect();
    assert_eq!(summary, [(1, old_hash.clone()), (2, new_hash.clone())]);

    // `kubectl rollout undo`: the first revision's data patched back in.
    let data = revs[0].data.clone().unwrap().0;
    dss.patch("roll", &PatchParams::default(), &Patch::Strategic(data))
        .await
        .unwrap();
    eventually(30, "rolled back", || async {
        let m = pods_by_node(&pods, "roll").await;
        ready_up(&pods, m.values().flatten()).await;
        let hashes: BTreeSet<String> = m.values().flatten().map(hash_of).collect();
        (nodes_of(&m) == all && hashes == BTreeSet::from([old_hash.clone()])).then_some(())
    })
    .await;
    let rev1 = revisions.get(&revs[0].name_any()).await.unwrap();
    assert_eq!(rev1.revision, 3, "the reused revision becomes the newest");
    let ds = dss.get("roll").await.unwrap();
    let image_now = ds.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image_now.as_deref(), Some("agent:1"));
    let deletes = events_for(&h.client, "roll")
        .await
        .into_iter()
        .filter(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: roll-"))
        .count();
    assert!(deletes >= 8, "{deletes} deletions");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_waits_for_the_user_and_history_is_trimmed() {
    let (h, dss, pods) = start(&["o1"]).await;
    let revisions: Api<ControllerRevision> = h.api();
    daemon_set(
        &dss,
        "od",
        json!({"updateStrategy": {"type": "OnDelete"}, "revisionHistoryLimit": 1}),
        json!({}),
    )
    .await;
    let first = wait_pod_on(&pods, "od", "o1").await;
    for tag in ["2", "3"] {
        dss.patch("od", &PatchParams::default(), &image(tag))
            .await
            .unwrap();
        wait_counts(&dss, "od", [1, 1, 0, 0, 0, 0, 1]).await;
    }
    // The old pod stays; its revision is live, so the limit of one old
    // revision drops only the unused middle one.
    let revs = eventually(20, "history trimmed", || async {
        let r = revisions.list(&ListParams::default()).await.unwrap().items;
        (r.len() == 2).then_some(r)
    })
    .await;
    let mut kept: Vec<i64> = revs.iter().map(|r| r.revision).collect();
    kept.sort();
    assert_eq!(kept, [1, 3]);
    let still = pods_by_node(&pods, "od").await;
    assert_eq!(still["o1"][0].name_any(), first.name_any());

    // Deleting it by hand brings the current template.
    pods.delete(&first.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let fresh = wait_pods(&pods, "od", "a new pod", |m| {
        m.get("o1")
            .and_then(|ps| ps.first())
            .is_some_and(|p| p.name_any() != first.name_any())
    })
    .await["o1"][0]
        .clone();
    assert_eq!(
        fresh.spec.unwrap().containers[0].image.as_deref(),
        Some("agent:3")
    );
    wait_counts(&dss, "od", [1, 1, 0, 0, 1, 0, 1]).await;
    h.stop().await;
}
