//! A status write records its writer in managedFields, as upstream does
//! (an Update entry with subresource "status" owning only status fields),
//! and leaves the spec writer's entry and everything outside status alone.

mod support;

use serde_json::{json, Value};
use support::{container, Server};

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_patches_and_updates_are_tracked_under_the_status_subresource() {
    let s = Server::start().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tracked", "labels": {"app": "a"}},
        "spec": {"containers": [container("c")]}});
    let (code, created) = s
        .json("POST", &format!("{pods}?fieldManager=creator"), Some(&pod))
        .await;
    assert_eq!(code, 201, "{created}");

    let status = format!("{pods}/tracked/status");
    // A merge patch of the status that also tries to change a label: the
    // label change is ignored, the status change is recorded.
    let patch = json!({"metadata": {"labels": {"app": "b"}},
        "status": {"phase": "Running", "podIP": "10.1.2.3"}});
    let (code, patched) = s
        .json(
            "PATCH",
            &format!("{status}?fieldManager=statuser"),
            Some(&patch),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["status"]["phase"], "Running");
    assert_eq!(patched["metadata"]["labels"]["app"], "a");
    let e = entry(&patched, "statuser").unwrap_or_else(|| panic!("no entry: {patched}"));
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["subresource"], "status");
    assert!(e["fieldsV1"]["f:status"]["f:phase"].is_object(), "{e}");
    assert!(e["fieldsV1"]["f:status"]["f:podIP"].is_object(), "{e}");
    assert!(e["fieldsV1"].get("f:metadata").is_none(), "{e}");
    assert!(entry(&patched, "creator").is_some(), "{patched}");
    let (_, read) = s.json("GET", &format!("{pods}/tracked"), None).await;
    assert_eq!(read, patched, "the answer is what was stored");

    // A PUT of the status by another writer takes the phase over.
    let mut put = read.clone();
    put["status"]["phase"] = json!("Succeeded");
    let (code, updated) = s
        .json(
            "PUT",
            &format!("{status}?fieldManager=finisher"),
            Some(&put),
        )
        .await;
    assert_eq!(code, 200, "{updated}");
    let f = entry(&updated, "finisher").unwrap_or_else(|| panic!("no entry: {updated}"));
    assert_eq!(f["subresource"], "status");
    assert!(f["fieldsV1"]["f:status"]["f:phase"].is_object(), "{f}");
    let e = entry(&updated, "statuser").unwrap();
    assert!(e["fieldsV1"]["f:status"].get("f:phase").is_none(), "{e}");
    assert!(e["fieldsV1"]["f:status"]["f:podIP"].is_object(), "{e}");
    assert_eq!(updated["spec"], created["spec"]);
}
