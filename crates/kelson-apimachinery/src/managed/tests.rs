use serde_json::{json, Value};

use super::*;

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";

static DEPLOY_TYPES: BuiltinTypes = BuiltinTypes {
    definition: DEPLOYMENT,
};
static CM_TYPES: BuiltinTypes = BuiltinTypes {
    definition: "io.k8s.api.core.v1.ConfigMap",
};

fn req<'a>(manager: &'a str, now: &'a str) -> Request<'a> {
    Request {
        types: &DEPLOY_TYPES,
        manager,
        api_version: "apps/v1",
        subresource: None,
        reset_fields: &["status"],
        now,
    }
}

fn deployment(replicas: i64, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

fn two_containers() -> Value {
    json!([
        {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
        {"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]}
    ])
}

/// Stores the outcome as the API server would: object + managedFields + uid.
fn stored(outcome: &ApplyOutcome) -> Value {
    let mut obj = outcome.object.clone();
    obj["metadata"]["uid"] = json!("u-1");
    obj["metadata"]["managedFields"] = Value::Array(outcome.managed_fields.clone());
    obj
}

fn entry<'a>(obj: &'a Value, manager: &str, op: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == op)
}

fn fields(e: &Value) -> String {
    fields_v1_text(e).unwrap_or_default()
}

#[test]
fn configmap_apply_matches_upstream_docs_example() {
    // The "Server-Side Apply" documentation page's ConfigMap example.
    let config = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "test-cm", "namespace": "default", "labels": {"test-label": "test"}},
        "data": {"key": "some value"}
    });
    let r = Request {
        types: &CM_TYPES,
        manager: "kubectl",
        api_version: "v1",
        subresource: None,
        reset_fields: &[],
        now: T0,
    };
    let out = apply(None, &config, &r, false).unwrap();
    assert_eq!(out.managed_fields.len(), 1);
    let e = &out.managed_fields[0];
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["time"], T0);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(
        fields(e),
        r#"{"f:data":{"f:key":{}},"f:metadata":{"f:labels":{"f:test-label":{}}}}"#
    );
    assert_eq!(out.object["data"]["key"], "some value");
}

#[test]
fn deployment_apply_field_set_encoding() {
    let out = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let e = &out.managed_fields[0];
    // selector is an atomic struct (LabelSelector); containers keyed by name;
    // ports by containerPort+protocol (protocol defaults to TCP); args atomic.
    assert_eq!(
        fields(e),
        concat!(
            r#"{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:selector":{},"#,
            r#""f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"#,
            r#""k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{},"f:ports":{"#,
            r#""k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}},"#,
            r#""k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}}}}}}}"#
        )
    );
    // name/namespace are never recorded.
    assert!(!fields(e).contains("f:name\":{},\"f:namespace"));
}

#[test]
fn reapply_without_container_removes_it() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let only_nginx =
        json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]);
    let out = apply(
        Some(&live),
        &deployment(3, only_nginx),
        &req("a", T1),
        false,
    )
    .unwrap();
    let containers = out.object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "nginx");
    assert!(out.changed);
    assert!(!fields(&out.managed_fields[0]).contains("sidecar"));
    assert_eq!(out.managed_fields[0]["time"], T1);
}

#[test]
fn omitted_field_owned_by_another_manager_stays() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    // B applies the same sidecar image: shared ownership, no conflict.
    let b_config = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}}
    });
    let shared = apply(Some(&live), &b_config, &req("b", T1), false).unwrap();
    assert!(!shared.changed);
    let live = stored(&shared);
    assert!(fields(entry(&live, "b", "Apply").unwrap()).contains("sidecar"));
    assert!(fields(entry(&live, "a", "Apply").unwrap()).contains("sidecar"));
    // A drops the sidecar: B still owns it, so it stays; A loses it.
    let only_nginx =
        json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]);
    let out = apply(
        Some(&live),
        &deployment(3, only_nginx),
        &req("a", T1),
        false,
    )
    .unwrap();
    let containers = out.object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[1]["image"], "busybox");
    // B's ownership kept the image and name; A's args went (nobody else owned them).
    assert!(containers[1].get("args").is_none());
}

#[test]
fn conflict_on_replicas_and_force() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let b_config = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}
    });
    let err = apply(Some(&live), &b_config, &req("b", T1), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#
    );
    assert_eq!(err.http_status(), 409);
    let ManagedError::Conflicts(c) = &err else {
        panic!("expected conflicts")
    };
    assert_eq!(c[0].cause_message(), r#"conflict with "a""#);

    let out = apply(Some(&live), &b_config, &req("b", T1), true).unwrap();
    assert_eq!(out.object["spec"]["replicas"], 5);
    let live = stored(&out);
    assert_eq!(
        fields(entry(&live, "b", "Apply").unwrap()),
        r#"{"f:spec":{"f:replicas":{}}}"#
    );
    assert!(!fields(entry(&live, "a", "Apply").unwrap()).contains("f:replicas"));
}

#[test]
fn kubectl_scale_then_apply_conflicts_with_update_manager() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    // kubectl scale: an Update of spec.replicas (via the scale subresource
    // upstream records it on the main object with subresource "scale").
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(10);
    let mut r = req("kubectl", T1);
    r.subresource = Some("scale");
    let mf = update(Some(&live), &scaled, &r);
    scaled["metadata"]["managedFields"] = Value::Array(mf);
    let e = entry(&scaled, "kubectl", "Update").unwrap();
    assert_eq!(e["subresource"], "scale");
    assert_eq!(fields(e), r#"{"f:spec":{"f:replicas":{}}}"#);
    // A lost replicas.
    assert!(!fields(entry(&scaled, "a", "Apply").unwrap()).contains("replicas"));

    let err = apply(
        Some(&scaled),
        &deployment(4, two_containers()),
        &req("a", T1),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#
    );
    // Re-applying the live value is fine (shared ownership).
    let ok = apply(
        Some(&scaled),
        &deployment(10, two_containers()),
        &req("a", T1),
        false,
    );
    assert!(ok.is_ok());
}

#[test]
fn multiple_conflicts_message() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let b = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}
    });
    let err = apply(Some(&live), &b, &req("b", T1), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn create_update_records_dot_markers_like_upstream() {
    // kubectl create: an Update on an object without managedFields (create).
    let mut obj = deployment(1, json!([{"name": "nginx", "image": "nginx"}]));
    obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    obj["metadata"]["annotations"] = json!({"note": "x"});
    let mf = update(None, &obj, &req("kubectl-create", T0));
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0]["operation"], "Update");
    assert_eq!(mf[0]["apiVersion"], "apps/v1");
    assert_eq!(
        fields(&mf[0]),
        concat!(
            r#"{"f:metadata":{"f:annotations":{".":{},"f:note":{}},"f:labels":{".":{},"f:app":{}}},"#,
            r#""f:spec":{"f:replicas":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{".":{},"#,
            r#""f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"#,
            r#""f:labels":{".":{},"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"#,
            r#"".":{},"f:image":{},"f:name":{}}}}}}}"#
        )
    );
}

#[test]
fn update_of_untracked_existing_object_stays_untracked() {
    let mut live = deployment(1, json!([{"name": "nginx", "image": "nginx"}]));
    live["metadata"]["uid"] = json!("u-1");
    let mut new = live.clone();
    new["spec"]["replicas"] = json!(2);
    assert!(update(Some(&live), &new, &req("kubectl-edit", T1)).is_empty());
}

#[test]
fn first_apply_on_untracked_object_creates_before_first_apply() {
    let mut live = deployment(1, json!([{"name": "nginx", "image": "nginx"}]));
    live["metadata"]["uid"] = json!("u-1");
    let config = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"minReadySeconds": 5}
    });
    let out = apply(Some(&live), &config, &req("a", T1), false).unwrap();
    let obj = stored(&out);
    let bfa = entry(&obj, "before-first-apply", "Update").unwrap();
    assert!(fields(bfa).contains("f:replicas"));
    assert_eq!(
        fields(entry(&obj, "a", "Apply").unwrap()),
        r#"{"f:spec":{"f:minReadySeconds":{}}}"#
    );
    // Apply entries sort before Update entries.
    assert_eq!(out.managed_fields[0]["operation"], "Apply");
    // Changing replicas now conflicts with before-first-apply.
    let err = apply(
        Some(&obj),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}),
        &req("a", T1),
        false,
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains(r#"conflict with "before-first-apply" using apps/v1: .spec.replicas"#));
}

#[test]
fn update_takes_ownership_and_removes_from_others() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let mut edited = live.clone();
    edited["metadata"]["labels"]["tier"] = json!("front");
    edited["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("app");
    let mf = update(Some(&live), &edited, &req("kubectl-edit", T1));
    edited["metadata"]["managedFields"] = Value::Array(mf);
    assert_eq!(
        fields(entry(&edited, "kubectl-edit", "Update").unwrap()),
        r#"{"f:metadata":{"f:labels":{"f:tier":{}}}}"#
    );
    // A no longer owns the removed label.
    let a = fields(entry(&edited, "a", "Apply").unwrap());
    assert!(a.starts_with(r#"{"f:spec""#), "{a}");
}

#[test]
fn update_sending_back_the_stored_entries_leaves_untouched_ones_as_they_were() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let before = entry(&live, "a", "Apply").unwrap().clone();
    // A patch-like update: the read object, managedFields included, with
    // one label added.
    let mut edited = live.clone();
    edited["metadata"]["labels"]["tier"] = json!("front");
    let mf = update(Some(&live), &edited, &req("labeler", T1));
    edited["metadata"]["managedFields"] = Value::Array(mf);
    assert_eq!(entry(&edited, "a", "Apply").unwrap(), &before);
    assert_eq!(
        fields(entry(&edited, "labeler", "Update").unwrap()),
        r#"{"f:metadata":{"f:labels":{"f:tier":{}}}}"#,
        "managedFields themselves are never owned"
    );
    // Only managedFields differ: nothing is recorded for the writer.
    let mut touched = live.clone();
    touched["metadata"]["managedFields"][0]["time"] = json!(T1);
    let mf = update(Some(&live), &touched, &req("toucher", T1));
    assert!(mf.iter().all(|e| e["manager"] != "toucher"), "{mf:?}");
}

#[test]
fn set_lists_granular_and_atomic_maps() {
    let cm = Request {
        types: &CM_TYPES,
        manager: "m",
        api_version: "v1",
        subresource: None,
        reset_fields: &[],
        now: T0,
    };
    let config = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "finalizers": ["example.com/a", "example.com/b"]}
    });
    let out = apply(None, &config, &cm, false).unwrap();
    assert_eq!(
        fields(&out.managed_fields[0]),
        r#"{"f:metadata":{"f:finalizers":{"v:\"example.com/a\"":{},"v:\"example.com/b\"":{}}}}"#
    );
    // Another manager adds a finalizer to the set; both stay.
    let live = stored(&out);
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["example.com/c"]}});
    let cm2 = Request { manager: "n", ..cm };
    let out = apply(Some(&live), &other, &cm2, false).unwrap();
    assert_eq!(
        out.object["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/b", "example.com/c"])
    );

    // nodeSelector is an atomic map, env a list keyed by name.
    static POD: BuiltinTypes = BuiltinTypes {
        definition: "io.k8s.api.core.v1.Pod",
    };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "i",
            "env": [{"name": "A", "value": "1"}]}]}
    });
    let set = field_set(&pod, &POD).unwrap();
    assert_eq!(
        set.to_fields_v1(),
        concat!(
            r#"{"f:apiVersion":{},"f:kind":{},"f:metadata":{"f:name":{}},"f:spec":{"f:containers":{"#,
            r#""k:{\"name\":\"c\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}}},"#,
            r#""f:image":{},"f:name":{}}},"f:nodeSelector":{}}}"#
        )
    );
}

#[test]
fn duplicate_keys_in_applied_config_are_rejected() {
    let dup = json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]);
    let err = apply(None, &deployment(1, dup), &req("a", T0), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("duplicate entries for key [name=\"a\"]"),
        "{err}"
    );
    let missing = json!([{"image": "x"}]);
    let err = apply(None, &deployment(1, missing), &req("a", T0), false).unwrap_err();
    assert!(err.to_string().contains("omits all key fields"), "{err}");
}

#[test]
fn applied_config_checks() {
    let mut c = deployment(1, json!([]));
    c["apiVersion"] = json!("apps/v1beta1");
    let err = apply(None, &c, &req("a", T0), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid object type: apps/v1beta1, Kind=Deployment"
    );
    let mut c = deployment(1, json!([]));
    c["metadata"]["managedFields"] = json!([]);
    let err = apply(None, &c, &req("a", T0), false).unwrap_err();
    assert_eq!(err.to_string(), "metadata.managedFields must be nil");
    assert_eq!(err.http_status(), 400);
}

#[test]
fn status_subresource_tracked_separately_and_reset_on_main() {
    let first = apply(None, &deployment(1, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let mut with_status = live.clone();
    with_status["status"] =
        json!({"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]});
    let r = Request {
        subresource: Some("status"),
        reset_fields: &["spec", "metadata"],
        ..req("kube-controller-manager", T1)
    };
    let mf = update(Some(&live), &with_status, &r);
    with_status["metadata"]["managedFields"] = Value::Array(mf);
    let e = entry(&with_status, "kube-controller-manager", "Update").unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        fields(e),
        r#"{"f:status":{"f:conditions":{".":{},"k:{\"type\":\"Available\"}":{".":{},"f:status":{},"f:type":{}}},"f:replicas":{}}}"#
    );
    // Writing status through the main resource records nothing (reset).
    let mut again = with_status.clone();
    again["status"]["replicas"] = json!(2);
    let mf = update(Some(&with_status), &again, &req("x", T1));
    assert!(mf.iter().all(|e| e["manager"] != "x"));
}

#[test]
fn crd_schema_types() {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "items": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["id"],
                    "items": {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": "string"}}}},
                "tags": {"type": "array", "items": {"type": "string"}},
                "opts": {"type": "object", "x-kubernetes-map-type": "atomic",
                    "additionalProperties": {"type": "string"}}
            }}
        }
    });
    let types = SchemaTypes { schema: &schema };
    let cr = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": {"items": [{"id": 10, "v": "x"}, {"id": 9}], "tags": ["t"], "opts": {"k": "v"}}
    });
    let r = Request {
        types: &types,
        manager: "m",
        api_version: "example.com/v1",
        subresource: None,
        reset_fields: &[],
        now: T0,
    };
    let mf = update(None, &cr, &r);
    // Unstructured: spec is added (no Go zero value), so it carries ".";
    // keys sort numerically (9 before 10).
    assert_eq!(
        fields(&mf[0]),
        concat!(
            r#"{"f:metadata":{"f:labels":{".":{},"f:a":{}}},"f:spec":{".":{},"f:items":{".":{},"#,
            r#""k:{\"id\":9}":{".":{},"f:id":{}},"k:{\"id\":10}":{".":{},"f:id":{},"f:v":{}}},"#,
            r#""f:opts":{},"f:tags":{}}}"#
        )
    );
}

#[test]
fn kubectl_upgrade_from_client_side_apply() {
    // Created by kubectl client-side apply: an Update entry plus the annotation.
    let mut obj = deployment(3, json!([{"name": "nginx", "image": "nginx"}]));
    let last = obj.clone();
    let mut text = String::new();
    set::write_go_json(&last, &mut text);
    obj["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: text });
    let mf = update(None, &obj, &req("kubectl-client-side-apply", T0));
    obj["metadata"]["managedFields"] = Value::Array(mf);
    obj["metadata"]["uid"] = json!("u");
    // Server-side apply by "kubectl" of the same config, changing the image:
    // the fields equal to last-applied may be taken over; the image differs
    // from last-applied? No: the live image equals last-applied, so it is
    // allowed too.
    let mut config = deployment(3, json!([{"name": "nginx", "image": "nginx:2"}]));
    config["metadata"]["annotations"] = json!({});
    let r = req("kubectl", T1);
    let out = apply(Some(&obj), &config, &r, false).unwrap();
    assert_eq!(
        out.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    // The annotation now records the applied configuration.
    let ann = out.object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(ann.contains("nginx:2") && ann.ends_with('\n'));
    // Another manager name gets the conflict.
    let err = apply(Some(&obj), &config, &req("other", T1), false).unwrap_err();
    assert!(err.to_string().contains("kubectl-client-side-apply"));
}

#[test]
fn noop_apply_keeps_object_and_time() {
    let first = apply(None, &deployment(3, two_containers()), &req("a", T0), false).unwrap();
    let live = stored(&first);
    let out = apply(
        Some(&live),
        &deployment(3, two_containers()),
        &req("a", T1),
        false,
    )
    .unwrap();
    assert!(!out.changed);
    assert_eq!(out.managed_fields[0]["time"], T0);
}

#[test]
fn fields_v1_round_trip_and_path_strings() {
    let text = r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{}}},"f:x":{"v:1":{},"v:\"a\"":{}}}}"#;
    let v: Value = serde_json::from_str(text).unwrap();
    let set = Set::from_fields_v1(&v).unwrap();
    assert_eq!(set.to_fields_v1(), text);
    let paths: Vec<String> = set.paths().iter().map(|p| set::path_string(p)).collect();
    assert!(paths.contains(&r#".spec.ports[port=80,protocol="TCP"].port"#.to_string()));
    assert!(paths.contains(&r#".spec.x[="a"]"#.to_string()));
}

#[test]
fn ancient_changes_caps_update_managers() {
    let mut obj =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    let mut mf = Vec::new();
    for i in 0..12 {
        let mut next = obj.clone();
        next["data"][format!("k{i}")] = json!("v");
        let now = format!("2025-01-01T00:00:{i:02}Z");
        let name = format!("m{i:02}");
        let r = Request {
            types: &CM_TYPES,
            manager: &name,
            api_version: "v1",
            subresource: None,
            reset_fields: &[],
            now: &now,
        };
        mf = update(Some(&obj).filter(|_| i > 0), &next, &r);
        next["metadata"]["managedFields"] = Value::Array(mf.clone());
        next["metadata"]["uid"] = json!("u");
        obj = next;
    }
    assert_eq!(mf.len(), 10);
    let ancient = mf
        .iter()
        .find(|e| e["manager"] == "ancient-changes")
        .unwrap();
    // m00 created the object, adding `data` itself (hence the ".").
    assert_eq!(
        fields(ancient),
        r#"{"f:data":{".":{},"f:k0":{},"f:k1":{},"f:k2":{}}}"#
    );
    assert!(mf
        .iter()
        .all(|e| e["manager"] != "m00" && e["manager"] != "m02"));
}

#[test]
fn builtin_update_cost_is_small() {
    // Not a benchmark: guards against accidental quadratic behaviour.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b", "c": "d"}},
        "spec": {"containers": (0..5).map(|i| json!({
            "name": format!("c{i}"), "image": "nginx",
            "ports": [{"containerPort": 80 + i}],
            "env": (0..10).map(|j| json!({"name": format!("E{j}"), "value": "v"})).collect::<Vec<_>>(),
            "resources": {"limits": {"cpu": "1"}}
        })).collect::<Vec<_>>(), "restartPolicy": "Always"}
    });
    static POD: BuiltinTypes = BuiltinTypes {
        definition: "io.k8s.api.core.v1.Pod",
    };
    let r = Request {
        types: &POD,
        manager: "kubectl-create",
        api_version: "v1",
        subresource: None,
        reset_fields: &["status"],
        now: T0,
    };
    let start = std::time::Instant::now();
    let n = 50;
    for _ in 0..n {
        assert_eq!(update(None, &pod, &r).len(), 1);
    }
    let per = start.elapsed() / n;
    eprintln!("update of a 5-container pod: {per:?}");
    assert!(
        per < std::time::Duration::from_millis(20),
        "{per:?} per update"
    );
}

#[test]
fn untouched_entries_are_kept_and_client_sets_are_re_encoded() {
    // A stored object with two managers.
    let created = deployment(1, two_containers());
    let mut obj = created.clone();
    obj["metadata"]["uid"] = json!("u-1");
    obj["metadata"]["managedFields"] = Value::Array(update(None, &created, &req("a", T0)));
    let a_before = entry(&obj, "a", "Update").unwrap().clone();

    // Manager b changes only the replicas: a's entry comes out as it was.
    let mut scaled = obj.clone();
    scaled["spec"]["replicas"] = json!(3);
    let out = update(Some(&obj), &scaled, &req("b", T1));
    let mut next = scaled.clone();
    next["metadata"]["managedFields"] = Value::Array(out);
    let a_after = entry(&next, "a", "Update").unwrap();
    assert!(!fields(a_after).contains("f:replicas"));
    assert_eq!(
        fields(entry(&next, "b", "Update").unwrap()),
        "{\"f:spec\":{\"f:replicas\":{}}}"
    );
    assert_ne!(a_after, &a_before, "a lost the replicas b took over");

    // A client that writes managedFields itself, with a key spelled
    // differently (a space in it), gets it back in the canonical spelling.
    let mut mine = next.clone();
    mine["metadata"]["managedFields"] = json!([{
        "manager": "c", "operation": "Update", "apiVersion": "apps/v1",
        "time": T1, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\": \"nginx\"}": {"f:image": {}}
        }}}}}
    }]);
    let out = update(Some(&next), &mine, &req("c", T1));
    let text = serde_json::to_string(&out[0]["fieldsV1"]).unwrap();
    assert!(text.contains("k:{\\\"name\\\":\\\"nginx\\\"}"), "{text}");
}

/// Built-in types that give no stable id, so [`update`] takes its full path.
struct Unremembered(BuiltinTypes);

impl TypeInfo for Unremembered {
    fn root(&self) -> TypeRef<'_> {
        self.0.root()
    }
}

#[test]
fn remembered_create_sets_equal_computed_ones_for_objects_of_one_shape() {
    static POD: BuiltinTypes = BuiltinTypes {
        definition: "io.k8s.api.core.v1.Pod",
    };
    static SVC: BuiltinTypes = BuiltinTypes {
        definition: "io.k8s.api.core.v1.Service",
    };
    let pod = |name: &str, image: &str, port: i64, env: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": name,
                         "labels": {"app": image}, "annotations": {"a": null}},
            "spec": {
                "containers": [{
                    "name": "c", "image": image,
                    "ports": [{"containerPort": port, "protocol": "UDP"}, {"containerPort": 9}],
                    "env": [{"name": env, "value": image}],
                    "resources": {"requests": {"cpu": "1"}},
                    "args": ["a", image]
                }],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "nodeSelector": {},
                "volumes": []
            },
            "status": {"phase": "Pending"}
        })
    };
    let svc = |name: &str, port: i64| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"ports": [{"port": port, "targetPort": "http"}], "selector": {"app": name}}
        })
    };
    let cases: [(&BuiltinTypes, &str, Value, Value); 6] = [
        // Same shape: the second is answered from what the first left.
        (&POD, "v1", pod("a", "x", 80, "E"), pod("b", "y", 80, "E")),
        // Values inside lists name keyed and set items: new shapes.
        (&POD, "v1", pod("a", "x", 80, "E"), pod("a", "x", 81, "E")),
        (&POD, "v1", pod("a", "x", 80, "E"), pod("a", "x", 80, "F")),
        (&SVC, "v1", svc("s", 80), svc("t", 80)),
        (&SVC, "v1", svc("s", 80), svc("s", 443)),
        // Another type with the very same object must not share the entry.
        (
            &DEPLOY_TYPES,
            "apps/v1",
            deployment(1, two_containers()),
            deployment(3, two_containers()),
        ),
    ];
    for (types, version, first, second) in cases {
        for (reset, sub) in [
            (&["status"][..], None),
            (&["spec", "metadata"][..], Some("status")),
        ] {
            let remembered = Request {
                types,
                manager: "m",
                api_version: version,
                subresource: sub,
                reset_fields: reset,
                now: T0,
            };
            let computed = Request {
                types: &Unremembered(*types),
                ..remembered
            };
            for obj in [&first, &second, &first] {
                let want = update(None, obj, &computed);
                assert!(!want.is_empty() || sub.is_some(), "{obj}");
                assert_eq!(update(None, obj, &remembered), want, "{obj} {reset:?}");
            }
        }
    }
    // A pod read as a Service: same object, other type, other set.
    let as_pod = update(
        None,
        &svc("s", 80),
        &Request {
            types: &POD,
            ..req("m", T0)
        },
    );
    let as_svc = update(
        None,
        &svc("s", 80),
        &Request {
            types: &SVC,
            ..req("m", T0)
        },
    );
    assert_ne!(as_pod, as_svc);
}
