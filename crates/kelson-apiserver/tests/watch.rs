//! Watches through the real server over HTTPS: a watch that starts further
//! back than the watch cache's window is served from the store's history,
//! and must go on to live events without missing or repeating any.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// More events than the cache's window (8,192) keeps.
const BACKLOG: usize = 8_400;
const CONNECTIONS: usize = 4;

/// Creates ConfigMaps `{prefix}-{i}` for `range` over one keep-alive
/// connection with pipelined requests; returns how many got 201.
async fn create_pipelined(s: &Server, prefix: &str, range: std::ops::Range<usize>) -> usize {
    let tls = s.connect().await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let last = range.end - 1;
    let mut reqs = Vec::new();
    for i in range {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{prefix}-{i}")}, "data": {"i": i.to_string()}})
        .to_string();
        let conn = if i == last { "close" } else { "keep-alive" };
        reqs.extend_from_slice(
            format!(
                "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    // Written while the answers are read, so neither side's buffers fill.
    let writer = tokio::spawn(async move {
        wr.write_all(&reqs).await.unwrap();
        wr
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(120), rd.read_to_end(&mut raw)).await;
    drop(writer.await.unwrap());
    let needle = b"HTTP/1.1 201";
    raw.windows(needle.len()).filter(|w| w == needle).count()
}

async fn create_many(s: &Server, prefix: &str, n: usize) {
    let per = n.div_ceil(CONNECTIONS);
    let mut created = 0;
    let results = futures::future::join_all(
        (0..CONNECTIONS).map(|c| create_pipelined(s, prefix, c * per..((c + 1) * per).min(n))),
    )
    .await;
    for r in results {
        created += r;
    }
    assert_eq!(created, n, "every create answered 201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_beyond_the_cache_window_catches_up_and_follows_live_events() {
    let s = Server::start().await;
    let (code, list) = s
        .json("GET", "/api/v1/namespaces/default/configmaps", None)
        .await;
    assert_eq!(code, 200, "{list}");
    let start_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    create_many(&s, "old", BACKLOG).await;

    // The watch starts before the whole backlog: the cache's window no
    // longer reaches back that far.
    let watch = {
        let path = format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={start_rv}&timeoutSeconds=12"
        );
        let s = &s;
        async move { s.call("GET", &path, None).await }
    };
    let live = async {
        // Long enough to replay the backlog and go back to the cache.
        tokio::time::sleep(Duration::from_secs(4)).await;
        create_many(&s, "new", 40).await;
    };
    let ((code, _, body), ()) = tokio::join!(watch, live);
    assert_eq!(code, 200);

    let mut names = Vec::new();
    let mut last_rv = 0u64;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let ev: Value = serde_json::from_slice(line).expect("each line is one event");
        assert_eq!(ev["type"], "ADDED", "{ev}");
        let rv: u64 = ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rv > last_rv,
            "events in revision order: {rv} after {last_rv}"
        );
        last_rv = rv;
        names.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no event twice");
    let want: BTreeSet<String> = (0..BACKLOG)
        .map(|i| format!("old-{i}"))
        .chain((0..40).map(|i| format!("new-{i}")))
        .collect();
    let got: BTreeSet<String> = names.into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every object created after the start, once");
}

/// Metadata-only lists and watches (what kube-rs's metadata informers ask
/// for) carry each object's metadata and nothing else, and a watch with a
/// selector reports an object leaving it as DELETED at the revision of
/// the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_lists_and_watches_carry_metadata_alone() {
    const LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    const ONE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let s = Server::start().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "meta-a", "labels": {"tier": "a"}}, "data": {"secret-ish": "x"}});
    let (code, created) = s
        .json("POST", "/api/v1/namespaces/default/configmaps", Some(&cm))
        .await;
    assert_eq!(code, 201, "{created}");

    let (code, _, body) = s
        .call_accept(
            "GET",
            "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Da",
            None,
            LIST,
        )
        .await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["kind"], "PartialObjectMetadataList", "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["kind"], "PartialObjectMetadata");
    assert_eq!(items[0]["metadata"]["name"], "meta-a");
    assert_eq!(items[0]["metadata"]["labels"]["tier"], "a");
    assert_eq!(
        items[0]["metadata"]["uid"], created["metadata"]["uid"],
        "the stored metadata"
    );
    assert!(items[0].get("data").is_none(), "{}", items[0]);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let watch = {
        let path = format!(
            "/api/v1/namespaces/default/configmaps?watch=1&labelSelector=tier%3Da&resourceVersion={rv}&timeoutSeconds=3"
        );
        let s = &s;
        async move { s.call_accept("GET", &path, None, ONE).await }
    };
    let changes = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let path = "/api/v1/namespaces/default/configmaps/meta-a";
        let (code, v) = s
            .json(
                "PATCH",
                path,
                Some(&json!({"metadata": {"annotations": {"n": "1"}}})),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        let (code, moved) = s
            .json(
                "PATCH",
                path,
                Some(&json!({"metadata": {"labels": {"tier": "b"}}})),
            )
            .await;
        assert_eq!(code, 200, "{moved}");
        moved["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ((code, _, body), moved_rv) = tokio::join!(watch, changes);
    assert_eq!(code, 200);
    let events: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each line is one event"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(events[0]["object"]["metadata"]["annotations"]["n"], "1");
    assert!(events[0]["object"].get("data").is_none(), "{}", events[0]);
    assert_eq!(events[1]["type"], "DELETED");
    assert_eq!(events[1]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(
        events[1]["object"]["metadata"]["labels"]["tier"], "a",
        "the last state inside the selection"
    );
    assert_eq!(
        events[1]["object"]["metadata"]["resourceVersion"], moved_rv,
        "at the revision that moved it out"
    );
}
