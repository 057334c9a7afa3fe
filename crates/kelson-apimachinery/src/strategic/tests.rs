use super::*;
use serde_json::json;

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";
const SERVICE: &str = "io.k8s.api.core.v1.Service";

fn merge(original: Value, patch: Value, ty: &str) -> Value {
    match strategic_merge(&original, &patch, ty) {
        Ok(v) => v,
        Err(e) => panic!("patch failed: {e}"),
    }
}

fn merge_err(original: Value, patch: Value, ty: &str) -> StrategicError {
    match strategic_merge(&original, &patch, ty) {
        Ok(v) => panic!("patch unexpectedly applied: {v}"),
        Err(e) => e,
    }
}

/// A Deployment as the server stores it, with the given pod spec.
fn deployment(pod_spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}
        }
    })
}

fn pod_spec_patch(pod_spec_patch: Value) -> Value {
    json!({"spec": {"template": {"spec": pod_spec_patch}}})
}

fn pod_spec(v: &Value) -> &Value {
    &v["spec"]["template"]["spec"]
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn apply_adds_a_container_in_set_element_order() {
    let original = deployment(json!({"containers": [{"name": "nginx", "image": "nginx:1.25"}]}));
    // What `kubectl apply` sends after a sidecar was added to the manifest.
    let patch = pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
        "containers": [{"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]}]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["containers"],
        json!([
            {"name": "nginx", "image": "nginx:1.25"},
            {"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]}
        ])
    );
    // Untouched parts survive.
    assert_eq!(out["spec"]["replicas"], json!(2));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn apply_removes_a_container() {
    let original = deployment(json!({"containers": [
        {"name": "nginx", "image": "nginx"},
        {"name": "sidecar", "image": "busybox"}
    ]}));
    let patch = pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"$patch": "delete", "name": "sidecar"}]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["containers"],
        json!([{"name": "nginx", "image": "nginx"}])
    );
}

#[test]
fn apply_changes_one_env_var_by_name() {
    let original = deployment(json!({"containers": [{
        "name": "app",
        "image": "app:1",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "old"}, {"name": "C", "value": "3"}]
    }]}));
    let patch = pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{
            "name": "app",
            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
            "env": [{"name": "B", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        }]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["containers"][0]["env"],
        json!([
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "C", "value": "3"}
        ])
    );
    assert_eq!(pod_spec(&out)["containers"][0]["image"], json!("app:1"));
}

#[test]
fn apply_changes_a_container_port() {
    let original = deployment(json!({"containers": [{
        "name": "web",
        "image": "nginx",
        "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    }]}));
    // Ports merge by containerPort, so a changed port is an add plus a delete.
    let patch = pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [{
            "name": "web",
            "$setElementOrder/ports": [{"containerPort": 8080}],
            "ports": [{"containerPort": 8080, "name": "http"}, {"$patch": "delete", "containerPort": 80}]
        }]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["containers"][0]["ports"],
        json!([{"containerPort": 8080, "name": "http"}])
    );
}

#[test]
fn apply_removes_a_volume_and_its_mount() {
    let original = deployment(json!({
        "containers": [{"name": "app", "volumeMounts": [
            {"name": "cache", "mountPath": "/cache"},
            {"name": "data", "mountPath": "/data"}
        ]}],
        "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]
    }));
    let patch = pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{
            "name": "app",
            "$setElementOrder/volumeMounts": [{"mountPath": "/data"}],
            "volumeMounts": [{"$patch": "delete", "mountPath": "/cache"}]
        }],
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$patch": "delete", "name": "cache"}]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["volumes"],
        json!([{"name": "data", "emptyDir": {}}])
    );
    assert_eq!(
        pod_spec(&out)["containers"][0]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data"}])
    );
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let original = deployment(json!({
        "containers": [{"name": "app"}],
        "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}]
    }));
    // Volumes are `merge,retainKeys`: kubectl lists the keys to keep.
    let patch = pod_spec_patch(json!({
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$retainKeys": ["hostPath", "name"], "name": "data", "hostPath": {"path": "/srv"}}]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}])
    );
}

#[test]
fn retain_keys_switches_the_deployment_strategy() {
    let original = deployment(json!({"containers": [{"name": "app"}]}));
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn set_element_order_reorders_without_content_changes() {
    let original = deployment(json!({"containers": [
        {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}
    ]}));
    let patch = pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(names(&pod_spec(&out)["containers"]), ["c", "a", "b"]);
    assert_eq!(
        pod_spec(&out)["containers"][0],
        json!({"name": "c", "image": "c"})
    );
}

#[test]
fn set_element_order_keeps_server_only_items_near_their_neighbours() {
    // The live object has containers "x" and "y" that the manifest never had.
    let original = json!({"spec": {"containers": [
        {"name": "1", "image": "one"},
        {"name": "2"},
        {"name": "x"},
        {"name": "3"},
        {"name": "4"}
    ]}});
    let patch = json!({"spec": {"$setElementOrder/containers": [
        {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
    ]}});
    let out = merge(original, patch, POD);
    assert_eq!(names(&out["spec"]["containers"]), ["2", "1", "x", "4", "3"]);
    assert_eq!(out["spec"]["containers"][1]["image"], json!("one"));
}

#[test]
fn set_element_order_keeps_runs_of_server_only_items() {
    let original = json!({"spec": {"containers": [
        {"name": "1"}, {"name": "2"}, {"name": "7"}, {"name": "9"}, {"name": "8"}, {"name": "3"}, {"name": "4"}
    ]}});
    let patch = json!({"spec": {"$setElementOrder/containers": [
        {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
    ]}});
    let out = merge(original, patch, POD);
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["2", "1", "7", "9", "8", "4", "3"]
    );
}

#[test]
fn set_element_order_for_a_list_the_object_lacks() {
    let original = json!({"spec": {"containers": [{"name": "a"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/initContainers": [{"name": "y"}, {"name": "x"}],
        "initContainers": [{"name": "y", "image": null}, {"name": "x", "image": "x"}]
    }});
    let out = merge(original, patch, POD);
    assert_eq!(
        out["spec"]["initContainers"],
        json!([{"name": "y"}, {"name": "x", "image": "x"}])
    );
}

#[test]
fn set_element_order_with_additions_and_deletions_and_server_only_items() {
    // Upstream orders by its live slice as edited in place by the merge, so
    // the new item "3" ends up after the server-only "4".
    let original = json!({"spec": {"containers": [
        {"name": "1"}, {"name": "2", "image": "b"}, {"name": "4", "image": "c"}
    ]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
        "containers": [{"name": "3"}, {"name": "1", "$patch": "delete"}]
    }});
    let out = merge(original, patch, POD);
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "2", "image": "b"}, {"name": "4", "image": "c"}, {"name": "3"}])
    );
}

#[test]
fn plain_patch_puts_new_keyed_items_first() {
    // `kubectl patch --type strategic` without $setElementOrder: upstream
    // places items the live list does not have ahead of the existing ones.
    let original =
        deployment(json!({"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]}));
    let patch = pod_spec_patch(
        json!({"containers": [{"name": "app", "env": [{"name": "NEW", "value": "x"}]}]}),
    );
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["containers"][0]["env"],
        json!([{"name": "NEW", "value": "x"}, {"name": "A", "value": "1"}])
    );
}

#[test]
fn service_port_change_merges_by_port() {
    let original = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
            ]
        }
    });
    // kubectl patch svc web -p '{"spec":{"ports":[{"port":80,"targetPort":"web"}]}}'
    let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": "web"}]}});
    let out = merge(original.clone(), patch, SERVICE);
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
        ])
    );
    assert_eq!(out["spec"]["clusterIP"], json!("10.96.0.10"));

    // kubectl apply after the manifest moved port 80 to 8080.
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 8080}, {"port": 443}],
        "ports": [{"name": "http", "port": 8080, "targetPort": 8080}, {"$patch": "delete", "port": 80}]
    }});
    let out = merge(original, patch, SERVICE);
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 8080, "targetPort": 8080},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
        ])
    );
}

#[test]
fn labels_and_annotations_delete_with_null() {
    let original = json!({"metadata": {
        "name": "p",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": "x", "keep": "y"}
    }});
    // kubectl label pod p tier- env=prod ; kubectl annotate pod p note-
    let patch = json!({"metadata": {"labels": {"tier": null, "env": "prod"}, "annotations": {"note": null}}});
    let out = merge(original, patch, POD);
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "env": "prod"})
    );
    assert_eq!(out["metadata"]["annotations"], json!({"keep": "y"}));
    // A null for a field the object lacks adds nothing.
    let out = merge(
        json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"labels": {"a": null}}}),
        POD,
    );
    assert_eq!(out, json!({"metadata": {"name": "p", "labels": {}}}));
}

#[test]
fn finalizers_merge_as_a_set() {
    let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
    let out = merge(
        original.clone(),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
        POD,
    );
    let got: Vec<&str> = out["metadata"]["finalizers"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(got.len(), 3);
    assert!(got.contains(&"a") && got.contains(&"b") && got.contains(&"c"));

    // Removal through the parallel deletion list.
    let out = merge(
        original.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}}),
        POD,
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

    // kubectl apply replacing "a" by "c".
    let out = merge(
        original,
        json!({"metadata": {
            "$setElementOrder/finalizers": ["b", "c"],
            "finalizers": ["c"],
            "$deleteFromPrimitiveList/finalizers": ["a"]
        }}),
        POD,
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));

    // A deletion list for a missing field adds nothing.
    let out = merge(
        json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        POD,
    );
    assert_eq!(out, json!({"metadata": {"name": "p"}}));
}

#[test]
fn owner_references_merge_by_uid() {
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u2"});
    let original = json!({"metadata": {"ownerReferences": [rs.clone()]}});

    // Patch items come in patch order; the live item is merged in place.
    let patch = json!({"metadata": {"ownerReferences": [{"uid": "u1", "blockOwnerDeletion": true}, cm.clone()]}});
    let out = merge(original.clone(), patch, POD);
    let mut merged_rs = rs.clone();
    merged_rs["blockOwnerDeletion"] = json!(true);
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([merged_rs, cm.clone()])
    );

    // Only a new item: it lands ahead of the untouched live one.
    let patch = json!({"metadata": {"ownerReferences": [cm.clone()]}});
    let out = merge(original, patch, POD);
    assert_eq!(out["metadata"]["ownerReferences"], json!([cm, rs]));
}

#[test]
fn patch_replace_directive_on_lists_and_maps() {
    let original = deployment(json!({
        "containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}],
        "nodeSelector": {"disk": "ssd", "zone": "z1"}
    }));
    let patch = pod_spec_patch(json!({
        "containers": [{"name": "c", "image": "c"}, {"$patch": "replace"}],
        "nodeSelector": {"$patch": "replace", "gpu": "yes"}
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(
        pod_spec(&out)["containers"],
        json!([{"name": "c", "image": "c"}])
    );
    assert_eq!(pod_spec(&out)["nodeSelector"], json!({"gpu": "yes"}));
}

#[test]
fn patch_delete_directive_on_a_map_empties_it() {
    let original =
        deployment(json!({"containers": [{"name": "a"}], "securityContext": {"runAsUser": 1000}}));
    let out = merge(
        original,
        pod_spec_patch(json!({"securityContext": {"$patch": "delete"}})),
        DEPLOYMENT,
    );
    assert_eq!(pod_spec(&out)["securityContext"], json!({}));
    // At the top level it empties the whole object.
    let out = merge(
        json!({"metadata": {"name": "p"}}),
        json!({"$patch": "delete"}),
        POD,
    );
    assert_eq!(out, json!({}));
}

#[test]
fn node_selector_merges_key_by_key_under_strategic_patch() {
    // nodeSelector is an atomic map for server-side apply, but strategic
    // merge patch merges every map.
    let original =
        deployment(json!({"containers": [{"name": "a"}], "nodeSelector": {"disk": "ssd"}}));
    let out = merge(
        original,
        pod_spec_patch(json!({"nodeSelector": {"zone": "z1"}})),
        DEPLOYMENT,
    );
    assert_eq!(
        pod_spec(&out)["nodeSelector"],
        json!({"disk": "ssd", "zone": "z1"})
    );
}

#[test]
fn pdb_selector_is_replaced() {
    let original = json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}}}});
    let patch = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}, "minAvailable": "50%"}});
    let out = merge(original, patch, "io.k8s.api.policy.v1.PodDisruptionBudget");
    assert_eq!(
        out["spec"],
        json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "b"}}})
    );
}

#[test]
fn lists_without_merge_strategy_are_replaced() {
    let original = deployment(json!({
        "containers": [{"name": "a", "args": ["--x", "--y"]}],
        "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}]
    }));
    let patch = pod_spec_patch(json!({
        "containers": [{"name": "a", "args": ["--z"]}],
        "tolerations": [{"key": "k3", "operator": "Exists"}]
    }));
    let out = merge(original, patch, DEPLOYMENT);
    assert_eq!(pod_spec(&out)["containers"][0]["args"], json!(["--z"]));
    assert_eq!(
        pod_spec(&out)["tolerations"],
        json!([{"key": "k3", "operator": "Exists"}])
    );
}

#[test]
fn quantities_and_int_or_string_are_plain_values() {
    let original = deployment(json!({"containers": [{
        "name": "a",
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
        "livenessProbe": {"httpGet": {"port": 8080, "path": "/"}}
    }]}));
    let patch = pod_spec_patch(json!({"containers": [{
        "name": "a",
        "resources": {"limits": {"cpu": 1}},
        "livenessProbe": {"httpGet": {"port": "http"}}
    }]}));
    let out = merge(original, patch, DEPLOYMENT);
    let c = &pod_spec(&out)["containers"][0];
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": 1, "memory": "128Mi"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"port": "http", "path": "/"})
    );
}

#[test]
fn scale_and_edit_shapes() {
    // kubectl scale (via the scale subresource and directly).
    let out = merge(
        deployment(json!({"containers": [{"name": "a"}]})),
        json!({"spec": {"replicas": 5}}),
        DEPLOYMENT,
    );
    assert_eq!(out["spec"]["replicas"], json!(5));
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1}, "status": {"replicas": 1}});
    let out = merge(
        scale,
        json!({"spec": {"replicas": 3}}),
        "io.k8s.api.autoscaling.v1.Scale",
    );
    assert_eq!(out["spec"], json!({"replicas": 3}));
    assert_eq!(out["status"], json!({"replicas": 1}));
}

#[test]
fn unknown_nested_fields_merge_as_maps() {
    let original =
        json!({"spec": {"containers": [{"name": "a"}], "future": {"a": 1, "list": [1, 2]}}});
    let patch = json!({"spec": {"future": {"b": 2, "a": null, "list": [3]}}});
    let out = merge(original, patch, POD);
    assert_eq!(out["spec"]["future"], json!({"b": 2, "list": [3]}));
}

#[test]
fn new_values_lose_nulls_and_directives() {
    let original = json!({"metadata": {"name": "p"}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"name": "a", "image": null, "env": [{"name": "X", "value": "1"}], "$setElementOrder/env": [{"name": "X"}]}],
        "securityContext": {"runAsUser": 1, "fsGroup": null}
    }});
    let out = merge(original, patch, POD);
    assert_eq!(
        out["spec"],
        json!({
            "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}],
            "securityContext": {"runAsUser": 1}
        })
    );
}

#[test]
fn crd_and_aggregated_types_are_supported() {
    let original = json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}});
    let patch = json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}});
    let out = merge(
        original,
        patch,
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService",
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Available", "status": "True"}])
    );
    assert!(supports(
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
    ));
}

#[test]
fn malformed_directives_are_rejected() {
    let original = deployment(json!({
        "containers": [{"name": "a"}],
        "volumes": [{"name": "v", "emptyDir": {}}],
        "securityContext": {"runAsUser": 1}
    }));

    // $retainKeys must be a list and cover every field the patch sets.
    let e = merge_err(
        original.clone(),
        json!({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}}),
        DEPLOYMENT,
    );
    assert_eq!(
        e,
        StrategicError::BadRequest("invalid patch format of retainKeys".into())
    );
    assert_eq!(e.http_status(), 400);
    let e = merge_err(
        original.clone(),
        json!({"spec": {"strategy": {"$retainKeys": ["rollingUpdate"], "type": "Recreate"}}}),
        DEPLOYMENT,
    );
    assert_eq!(e.http_status(), 400);

    // Parallel lists need "<prefix>/<field>".
    let e = merge_err(
        original.clone(),
        pod_spec_patch(json!({"$setElementOrder": [{"name": "a"}]})),
        DEPLOYMENT,
    );
    assert_eq!(
        e,
        StrategicError::BadRequest("invalid patch format of setElementOrder list".into())
    );
    let e = merge_err(
        original.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList": ["x"]}}),
        DEPLOYMENT,
    );
    assert_eq!(
        e,
        StrategicError::BadRequest("invalid patch format of primitive list".into())
    );

    // A delete item without its merge key.
    let e = merge_err(
        original.clone(),
        pod_spec_patch(json!({"containers": [{"$patch": "delete", "image": "a"}]})),
        DEPLOYMENT,
    );
    assert!(
        matches!(&e, StrategicError::InvalidPatch(m) if m.contains("does not contain declared merge key: name")),
        "{e}"
    );

    // A merged item without its merge key.
    let e = merge_err(
        original.clone(),
        pod_spec_patch(json!({"containers": [{"image": "b"}]})),
        DEPLOYMENT,
    );
    assert!(
        matches!(&e, StrategicError::InvalidPatch(m) if m.contains("merge key: name")),
        "{e}"
    );

    // Unknown $patch values, in a map and in a list. (For a field the object
    // lacks, upstream silently drops a value carrying `$patch`.)
    let out = merge(
        json!({"spec": {}}),
        json!({"spec": {"affinity": {"$patch": "nuke"}}}),
        POD,
    );
    assert_eq!(out, json!({"spec": {}}));
    let e = merge_err(
        original.clone(),
        pod_spec_patch(json!({"securityContext": {"$patch": "nuke"}})),
        DEPLOYMENT,
    );
    assert!(
        matches!(&e, StrategicError::InvalidPatch(m) if m.starts_with("unknown patch type: nuke")),
        "{e}"
    );
    let e = merge_err(
        original.clone(),
        pod_spec_patch(json!({"containers": [{"name": "a", "$patch": "merge"}]})),
        DEPLOYMENT,
    );
    assert_eq!(
        e,
        StrategicError::InvalidPatch("merging lists cannot yet be specified in the patch".into())
    );

    // A patch list out of the $setElementOrder order.
    let e = merge_err(
        original.clone(),
        pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b"}, {"name": "a", "image": "x"}]
        })),
        DEPLOYMENT,
    );
    assert!(
        matches!(&e, StrategicError::InvalidPatch(m) if m.contains("doesn't match $setElementOrder list")),
        "{e}"
    );

    // Lists of lists (422 when a list comes first; else a type mismatch),
    // mixed element types.
    let e = merge_err(
        json!({"metadata": {"finalizers": []}}),
        json!({"metadata": {"finalizers": [["b"]]}}),
        POD,
    );
    assert_eq!(e.http_status(), 422);
    let e = merge_err(
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": [1]}}),
        POD,
    );
    assert!(matches!(e, StrategicError::InvalidPatch(_)));

    // Not an object, or a type without rules.
    assert_eq!(
        merge_err(original.clone(), json!([1]), DEPLOYMENT).http_status(),
        400
    );
    let e = merge_err(original, json!({}), "com.example.v1.Widget");
    assert_eq!(
        e,
        StrategicError::UnknownType("com.example.v1.Widget".into())
    );
}

#[test]
fn field_rules_lookup() {
    const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
    const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    assert_eq!(
        list_strategy(POD_SPEC, "containers"),
        ListStrategy::Map { keys: &["name"] }
    );
    assert_eq!(list_strategy(POD_SPEC, "tolerations"), ListStrategy::Atomic);
    assert_eq!(
        list_strategy(POD_SPEC, "nodeSelector"),
        ListStrategy::MapAtomic
    );
    assert_eq!(list_strategy(META, "finalizers"), ListStrategy::Set);
    assert_eq!(list_strategy(META, "labels"), ListStrategy::MapGranular);
    assert_eq!(
        list_strategy(META, "ownerReferences"),
        ListStrategy::Map { keys: &["uid"] }
    );
    assert_eq!(
        list_strategy(POD_SPEC, "hostname"),
        ListStrategy::NotCollection
    );

    assert_eq!(
        patch_meta(POD_SPEC, "volumes"),
        PatchMeta {
            merge: true,
            replace: false,
            retain_keys: true,
            merge_key: Some("name")
        }
    );
    assert_eq!(
        patch_meta(META, "finalizers"),
        PatchMeta {
            merge: true,
            ..PatchMeta::default()
        }
    );
    assert_eq!(
        patch_meta("io.k8s.api.core.v1.ServiceSpec", "ports").merge_key,
        Some("port")
    );
    assert_eq!(patch_meta(POD_SPEC, "tolerations"), PatchMeta::default());

    assert_eq!(field_type(DEPLOYMENT, "metadata"), Some(META));
    assert_eq!(
        field_type(DEPLOYMENT, "spec"),
        Some("io.k8s.api.apps.v1.DeploymentSpec")
    );
    assert_eq!(
        field_type(POD_SPEC, "containers"),
        Some("io.k8s.api.core.v1.Container")
    );
    assert_eq!(
        field_type("io.k8s.api.core.v1.ResourceRequirements", "limits"),
        None
    );
    assert_eq!(field_type(POD_SPEC, "hostname"), None);
}

#[test]
fn table_is_sorted_and_closed() {
    for pair in table::TYPES.windows(2) {
        if let [a, b] = pair {
            assert!(a.name < b.name, "{} / {}", a.name, b.name);
        }
    }
    for t in table::TYPES {
        for pair in t.fields.windows(2) {
            if let [a, b] = pair {
                assert!(a.name < b.name, "{}: {} / {}", t.name, a.name, b.name);
            }
        }
        for f in t.fields {
            if let Some(item) = f.item {
                assert!(
                    supports(item),
                    "{}.{} refers to unknown {item}",
                    t.name,
                    f.name
                );
            }
            if f.merge_key.is_empty() {
                continue;
            }
            // Every merge key is a field of the item type... or a scalar one,
            // which the table leaves out; at least the item type is known.
            assert!(
                f.item.is_some(),
                "{}.{} has a merge key but no item type",
                t.name,
                f.name
            );
        }
    }
}

#[test]
fn top_level_kinds_are_supported() {
    for kind in [
        "io.k8s.api.core.v1.Pod",
        "io.k8s.api.core.v1.Service",
        "io.k8s.api.core.v1.ConfigMap",
        "io.k8s.api.core.v1.Secret",
        "io.k8s.api.core.v1.Namespace",
        "io.k8s.api.core.v1.Node",
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        "io.k8s.api.core.v1.ServiceAccount",
        "io.k8s.api.apps.v1.Deployment",
        "io.k8s.api.apps.v1.StatefulSet",
        "io.k8s.api.apps.v1.DaemonSet",
        "io.k8s.api.apps.v1.ReplicaSet",
        "io.k8s.api.batch.v1.Job",
        "io.k8s.api.batch.v1.CronJob",
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
        "io.k8s.api.coordination.v1.Lease",
        "io.k8s.api.discovery.v1.EndpointSlice",
        "io.k8s.api.events.v1.Event",
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        "io.k8s.api.policy.v1.PodDisruptionBudget",
        "io.k8s.api.networking.v1.Ingress",
        "io.k8s.api.networking.v1.NetworkPolicy",
        "io.k8s.api.storage.v1.StorageClass",
        "io.k8s.api.scheduling.v1.PriorityClass",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    ] {
        assert!(supports(kind), "{kind}");
        assert_eq!(
            field_type(kind, "metadata"),
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "{kind}"
        );
    }
    assert!(!supports("io.k8s.apimachinery.pkg.api.resource.Quantity"));
}

#[test]
fn cronjob_pod_template_is_reached_through_nested_types() {
    let original = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    }}}}}});
    let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "b", "image": "b:2"}]
    }}}}}});
    let out = merge(original, patch, "io.k8s.api.batch.v1.CronJob");
    assert_eq!(
        out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..4).prop_map(Value::from),
            prop::sample::select(vec!["a", "b", "delete", "replace", "merge", "name"])
                .prop_map(Value::from),
        ];
        let keys = prop::sample::select(vec![
            "name",
            "containers",
            "env",
            "ports",
            "containerPort",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$deleteFromPrimitiveList/finalizers",
            "finalizers",
            "metadata",
            "spec",
            "template",
            "value",
        ]);
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone().prop_map(String::from), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Arbitrary (mostly malformed) patches never panic.
        #[test]
        fn never_panics(patch in json_value(), original in json_value()) {
            let base = deployment(json!({"containers": [{"name": "a", "env": [{"name": "x"}]}]}));
            let _ = strategic_merge(&base, &json!({"spec": {"template": {"spec": patch.clone()}}}), DEPLOYMENT);
            let _ = strategic_merge(&original, &patch, POD);
        }
    }
}
