//! Endpoints and EndpointSlices follow the pods behind a Service.

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kelson_controllers::endpoints;
use kube::api::{Api, DeleteParams, ListParams};

use crate::support::{create, eventually, patch_pod_status, Harness};

/// What a kubelet would report.
async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = serde_json::json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
            "lastTransitionTime": "2025-01-01T00:00:00Z"}],
    });
    patch_pod_status(pods, name, status).await.unwrap();
}

fn ips(v: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>) -> Vec<String> {
    let mut out: Vec<String> = v.iter().flatten().map(|a| a.ip.clone()).collect();
    out.sort();
    out
}

/// (ip, ready, serving, terminating) of every endpoint, sorted.
fn conditions(slices: &[EndpointSlice]) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e: &Endpoint| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses[0].clone(),
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pod_readiness() {
    let mut h = Harness::start().await;
    h.spawn(endpoints::run(h.client.clone(), h.shutdown.clone()));

    let nodes: Api<Node> = Api::all(h.client.clone());
    create(
        &nodes,
        serde_json::json!({"metadata": {"name": "node-1",
            "labels": {"topology.kubernetes.io/zone": "zone-a"}}}),
    )
    .await;
    let services: Api<Service> = h.api();
    let svc = create(
        &services,
        serde_json::json!({
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
            ]},
        }),
    )
    .await;
    // A Service without selector: its Endpoints belong to the user.
    create(
        &services,
        serde_json::json!({
            "metadata": {"name": "manual"},
            "spec": {"ports": [{"port": 5432}]},
        }),
    )
    .await;
    let eps: Api<Endpoints> = h.api();
    create(
        &eps,
        serde_json::json!({
            "metadata": {"name": "manual"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}],
        }),
    )
    .await;

    let pods: Api<Pod> = h.api();
    for name in ["web-1", "web-2"] {
        create(
            &pods,
            serde_json::json!({
                "metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            }),
        )
        .await;
    }
    // Not selected, and one without an IP yet.
    create(
        &pods,
        serde_json::json!({
            "metadata": {"name": "other", "labels": {"app": "other"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx"}]},
        }),
    )
    .await;
    set_status(&pods, "other", "10.1.0.9", true).await;
    set_status(&pods, "web-1", "10.1.0.1", true).await;
    set_status(&pods, "web-2", "10.1.0.2", false).await;

    let ep = eventually(15, "ready and not-ready addresses", || async {
        let ep = eps.get_opt("web").await.unwrap()?;
        let s = ep.subsets.clone()?.into_iter().next()?;
        (ips(&s.addresses) == ["10.1.0.1"] && ips(&s.not_ready_addresses) == ["10.1.0.2"])
            .then_some(ep)
    })
    .await;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), 8080),
        "named targetPort"
    );
    let addr = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(addr.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        addr.target_ref.as_ref().unwrap().name.as_deref(),
        Some("web-1")
    );
    assert_eq!(ep.metadata.labels.as_ref().unwrap()["tier"], "front");
    assert!(ep
        .metadata
        .annotations
        .as_ref()
        .unwrap()
        .contains_key("endpoints.kubernetes.io/last-change-trigger-time"));

    let slices: Api<EndpointSlice> = h.api();
    let lp = ListParams::default().labels("kubernetes.io/service-name=web");
    let list = eventually(15, "slice with both pods", || async {
        let l = slices.list(&lp).await.unwrap().items;
        (conditions(&l)
            == [
                ("10.1.0.1".into(), true, true, false),
                ("10.1.0.2".into(), false, false, false),
            ])
        .then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s.address_type, "IPv4");
    assert!(s.metadata.name.as_ref().unwrap().starts_with("web-"));
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", svc.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let e = &s.endpoints[0];
    assert_eq!(e.zone.as_deref(), Some("zone-a"));
    assert_eq!(e.node_name.as_deref(), Some("node-1"));
    assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));

    // web-2 becomes ready.
    set_status(&pods, "web-2", "10.1.0.2", true).await;
    eventually(15, "both ready", || async {
        let ep = eps.get("web").await.unwrap();
        let s = ep.subsets?.into_iter().next()?;
        (ips(&s.addresses) == ["10.1.0.1", "10.1.0.2"] && s.not_ready_addresses.is_none())
            .then_some(())
    })
    .await;
    // web-1 terminates: out of Endpoints, serving but not ready in slices.
    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually(15, "terminating pod", || async {
        let ep = eps.get("web").await.unwrap();
        let s = ep.subsets?.into_iter().next()?;
        let l = slices.list(&lp).await.unwrap().items;
        (ips(&s.addresses) == ["10.1.0.2"]
            && conditions(&l)
                == [
                    ("10.1.0.1".into(), false, true, true),
                    ("10.1.0.2".into(), true, true, false),
                ])
        .then_some(())
    })
    .await;

    // A deleted slice comes back.
    let name = slices.list(&lp).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    slices
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(15, "slice recreated", || async {
        let l = slices.list(&lp).await.unwrap().items;
        (conditions(&l).len() == 2).then_some(())
    })
    .await;

    // The user's Endpoints were never touched.
    let manual = eps.get("manual").await.unwrap();
    assert_eq!(ips(&manual.subsets.unwrap()[0].addresses), ["192.0.2.10"]);

    // The Service goes: so do its Endpoints.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(15, "endpoints deleted with the service", || async {
        eps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;

    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
        &ListParams::default(),
    )
    .await
    .unwrap();
    h.stop().await;
}
