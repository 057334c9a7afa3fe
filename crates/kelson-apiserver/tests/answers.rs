//! Writes answer with the object as stored: what a PATCH or PUT returns is
//! exactly what a GET reads afterwards, resourceVersion included.

mod support;

use serde_json::json;
use support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_put_answer_with_the_stored_object() {
    let s = Server::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "answer", "labels": {"a": "1"}}, "data": {"k": "v"}});
    let (code, created) = s.json("POST", path, Some(&cm)).await;
    assert_eq!(code, 201, "{created}");
    let one = format!("{path}/answer");

    let (code, patched) = s
        .json("PATCH", &one, Some(&json!({"data": {"k": "w"}})))
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"]["k"], "w");
    assert_ne!(
        patched["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    let (_, read) = s.json("GET", &one, None).await;
    assert_eq!(patched, read, "the PATCH answer is the stored object");

    let mut put = read.clone();
    put["data"]["k"] = json!("x");
    let (code, updated) = s.json("PUT", &one, Some(&put)).await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["data"]["k"], "x");
    assert!(updated["metadata"]["managedFields"].is_array());
    let (_, read) = s.json("GET", &one, None).await;
    assert_eq!(updated, read, "the PUT answer is the stored object");

    // A no-op write answers with the object as it was, not rewritten.
    let (code, same) = s.json("PUT", &one, Some(&read)).await;
    assert_eq!(code, 200, "{same}");
    assert_eq!(same, read);
}
