use super::*;
use serde_json::json;

fn res(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    subs: &[&str],
) -> ServedResource {
    let verbs = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    ServedResource {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        subresources: subs.iter().map(|s| s.to_string()).collect(),
        schema: SchemaSource::BuiltIn,
    }
}

fn crontab_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "cronSpec": {"type": "string"},
                    "replicas": {"type": "integer"},
                    "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "selector": {"type": "object", "additionalProperties": {"type": "string"}},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                    "note": {"type": "string", "nullable": true},
                },
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        },
    })
}

fn crontab() -> ServedResource {
    ServedResource {
        group: "stable.example.com".into(),
        version: "v1".into(),
        kind: "CronTab".into(),
        plural: "crontabs".into(),
        namespaced: true,
        verbs: [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ]
        .iter()
        .map(|v| v.to_string())
        .collect(),
        subresources: vec!["status".into(), "scale".into()],
        schema: SchemaSource::Custom(crontab_schema()),
    }
}

/// Roughly what Kelson serves: every supported built-in kind plus a CRD.
fn served() -> Vec<ServedResource> {
    let mut v = vec![
        res("", "v1", "Namespace", "namespaces", false, &["status"]),
        res(
            "",
            "v1",
            "Pod",
            "pods",
            true,
            &[
                "status",
                "eviction",
                "binding",
                "log",
                "ephemeralcontainers",
                "exec",
            ],
        ),
        res("", "v1", "Service", "services", true, &["status"]),
        res("", "v1", "Endpoints", "endpoints", true, &[]),
        res("", "v1", "ConfigMap", "configmaps", true, &[]),
        res("", "v1", "Secret", "secrets", true, &[]),
        res("", "v1", "ServiceAccount", "serviceaccounts", true, &[]),
        res("", "v1", "Node", "nodes", false, &["status"]),
        res("", "v1", "Event", "events", true, &[]),
        res(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            false,
            &["status"],
        ),
        res(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            &["status"],
        ),
        res("", "v1", "LimitRange", "limitranges", true, &[]),
        res(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            true,
            &["status"],
        ),
        res(
            "",
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            true,
            &["status", "scale"],
        ),
        res("", "v1", "PodTemplate", "podtemplates", true, &[]),
        ServedResource {
            verbs: vec!["create".into()],
            ..res("", "v1", "Binding", "bindings", true, &[])
        },
        res(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["status", "scale"],
        ),
        res(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            &["status", "scale"],
        ),
        res(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            &["status", "scale"],
        ),
        res("apps", "v1", "DaemonSet", "daemonsets", true, &["status"]),
        res(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            true,
            &[],
        ),
        res("batch", "v1", "Job", "jobs", true, &["status"]),
        res("batch", "v1", "CronJob", "cronjobs", true, &["status"]),
        res(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            &["status"],
        ),
        res(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            &["status"],
        ),
        res("coordination.k8s.io", "v1", "Lease", "leases", true, &[]),
        res(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
        ),
        res("events.k8s.io", "v1", "Event", "events", true, &[]),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            &[],
        ),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
        ),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
        ),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
        ),
        res(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["status"],
        ),
        res(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            &["status"],
        ),
        res(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            false,
            &[],
        ),
        res(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            &[],
        ),
        res(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
            &[],
        ),
        res(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            false,
            &[],
        ),
        res(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["status"],
        ),
    ];
    v.push(crontab());
    v
}

/// Every `$ref` in `v` must name an existing entry of `defs`.
fn assert_refs_resolve(v: &Value, prefix: &str, defs: &Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if let (true, Some(r)) = (k == "$ref", val.as_str()) {
                    let name = r
                        .strip_prefix(prefix)
                        .unwrap_or_else(|| panic!("bad ref prefix {r}"));
                    assert!(defs.contains_key(name), "unresolved ref {r}");
                } else {
                    assert_refs_resolve(val, prefix, defs);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_refs_resolve(x, prefix, defs)),
        _ => {}
    }
}

fn gvks(def: &Value) -> Vec<Value> {
    def["x-kubernetes-group-version-kind"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn builtin_table_names_match_k8s_openapi() {
    for b in builtin::BUILTINS {
        let defs = builtin::generate(&[b]);
        assert!(
            defs.contains_key(b.def),
            "{} not generated by its type",
            b.def
        );
    }
    assert_eq!(
        definition_name("apps", "v1", "Deployment"),
        Some("io.k8s.api.apps.v1.Deployment")
    );
    assert_eq!(
        definition_name("", "v1", "Pod"),
        Some("io.k8s.api.core.v1.Pod")
    );
    assert_eq!(
        definition_name("autoscaling", "v2", "HorizontalPodAutoscaler"),
        Some("io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler")
    );
    assert_eq!(
        definition_name("events.k8s.io", "v1", "Event"),
        Some("io.k8s.api.events.v1.Event")
    );
    assert_eq!(definition_name("apps", "v1beta1", "Deployment"), None);
    assert_eq!(definition_name("", "", ""), None);
}

#[test]
fn v2_is_swagger_with_resolvable_refs_and_gvks() {
    let doc = v2(&served());
    // Valid JSON round trip.
    let text = serde_json::to_string(&doc).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let defs = doc["definitions"].as_object().unwrap();
    assert_refs_resolve(&doc, "#/definitions/", defs);

    let dep = &defs["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        gvks(dep),
        vec![json!({"group": "apps", "kind": "Deployment", "version": "v1"})]
    );
    assert!(
        dep.get("required").is_none(),
        "upstream does not require metadata"
    );
    assert_eq!(
        gvks(&defs["io.k8s.api.apps.v1.DeploymentList"]),
        vec![json!({"group": "apps", "kind": "DeploymentList", "version": "v1"})]
    );
    assert_eq!(
        defs["io.k8s.api.apps.v1.DeploymentList"]["required"],
        json!(["items"])
    );
    assert_eq!(
        defs["io.k8s.api.core.v1.PodSpec"]["required"],
        json!(["containers"])
    );
    assert_eq!(gvks(&defs["io.k8s.api.core.v1.Pod"])[0]["group"], "");
    assert_eq!(
        defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
    assert_eq!(
        defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"],
        "string"
    );
    assert_eq!(
        defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"],
        "string"
    );
    // DeleteOptions is registered in every served group-version.
    let del = gvks(&defs["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]);
    assert!(del.contains(&json!({"group": "apps", "kind": "DeleteOptions", "version": "v1"})));
    assert!(del.contains(&json!({"group": "", "kind": "DeleteOptions", "version": "v1"})));
    // Custom resource wrapped with ObjectMeta and its GVK.
    let ct = &defs["com.example.stable.v1.CronTab"];
    assert_eq!(
        ct["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(
        gvks(ct),
        vec![json!({"group": "stable.example.com", "kind": "CronTab", "version": "v1"})]
    );
    // v2 cannot express int-or-string / nullable types.
    assert!(ct["properties"]["spec"]["properties"]["port"]
        .get("type")
        .is_none());
    assert!(ct["properties"]["spec"]["properties"]["port"]
        .get("anyOf")
        .is_none());
    assert!(ct["properties"]["spec"]["properties"]["note"]
        .get("nullable")
        .is_none());

    // The PATCH operation kubectl's query-param verifier looks for.
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let names: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"fieldValidation") && names.contains(&"dryRun") && names.contains(&"body")
    );
    assert!(patch["consumes"]
        .as_array()
        .unwrap()
        .contains(&json!("application/strategic-merge-patch+json")));
    let list = &doc["paths"]["/api/v1/pods"]["get"];
    assert_eq!(list["operationId"], "listCoreV1PodForAllNamespaces");
    assert_eq!(
        doc["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
        "readCoreV1Node"
    );
    let scale =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    let evict = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"];
    assert_eq!(evict["operationId"], "createCoreV1NamespacedPodEviction");
    assert!(doc["paths"]
        .get("/api/v1/namespaces/{namespace}/pods/{name}/exec")
        .is_none());
    // Binding is create-only.
    let bindings = doc["paths"]["/api/v1/namespaces/{namespace}/bindings"]
        .as_object()
        .unwrap();
    assert!(bindings.contains_key("post") && !bindings.contains_key("get"));
    // CRDs do not accept strategic merge patches.
    let ct_patch = &doc["paths"]
        ["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"];
    assert!(!ct_patch["consumes"]
        .as_array()
        .unwrap()
        .contains(&json!("application/strategic-merge-patch+json")));
    assert_eq!(
        ct_patch["operationId"],
        "patchStableExampleComV1NamespacedCronTab"
    );
}

#[test]
fn v3_index_lists_documents_with_content_hashes() {
    let served = served();
    let index = v3_index(&served);
    let paths = index["paths"].as_object().unwrap();
    for key in [
        "api",
        "apis",
        "version",
        "api/v1",
        "apis/apps/v1",
        "apis/apps",
        "apis/autoscaling/v2",
        "apis/stable.example.com/v1",
    ] {
        assert!(paths.contains_key(key), "missing {key}");
    }
    let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    let doc = v3_document(&served, "apis/apps/v1").unwrap();
    let hash = sha512::hex_upper(&serde_json::to_vec(&doc).unwrap());
    assert_eq!(url, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
    assert_eq!(hash.len(), 128);
    assert!(v3_document(&served, "apis/nope/v1").is_none());
    assert!(v3_document(&served, "apis/nope").is_none());
    assert!(v3_document(&served, "apis/apps/v1beta1").is_none());
}

#[test]
fn v3_documents_resolve_and_carry_kubectl_metadata() {
    let served = served();
    for key in v3_keys(&served) {
        let doc = v3_document(&served, &key).unwrap_or_else(|| panic!("no document {key}"));
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert_refs_resolve(&doc, "#/components/schemas/", schemas);
        assert!(
            !doc["paths"].as_object().unwrap().is_empty(),
            "{key} has no paths"
        );
    }
    let apps = v3_document(&served, "apis/apps/v1").unwrap();
    let schemas = apps["components"]["schemas"].as_object().unwrap();
    assert!(
        !schemas.contains_key("io.k8s.api.batch.v1.Job"),
        "only this group-version's kinds"
    );
    let ios = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(
        ios["oneOf"],
        json!([{"type": "integer"}, {"type": "string"}])
    );
    assert_eq!(ios["format"], "int-or-string");
    let qty = &schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"];
    assert_eq!(
        qty["oneOf"],
        json!([{"type": "string"}, {"type": "number"}])
    );
    // Strategic merge patch metadata kubectl apply reads from v3.
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]
            ["x-kubernetes-patch-strategy"],
        "merge,retainKeys"
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"]
            ["x-kubernetes-patch-merge-key"],
        "containerPort"
    );
    assert_eq!(
        schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
            ["x-kubernetes-patch-strategy"],
        "retainKeys"
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.Container"]["properties"]["args"]["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"]
            ["x-kubernetes-list-type"],
        "set"
    );
    let dep = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        gvks(dep),
        vec![json!({"group": "apps", "kind": "Deployment", "version": "v1"})]
    );
    assert_eq!(
        dep["properties"]["spec"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );

    let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let content = patch["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/strategic-merge-patch+json"));
    assert!(content.contains_key("application/apply-patch+yaml"));
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation"));
    let list = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"];
    assert_eq!(
        list["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
    );
    assert!(apps["paths"]["/apis/apps/v1/"]["get"]["operationId"] == "getAppsV1APIResources");

    let crd = v3_document(&served, "apis/stable.example.com/v1").unwrap();
    let ct = &crd["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        ct["properties"]["metadata"]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(
        ct["properties"]["spec"]["properties"]["port"]["x-kubernetes-int-or-string"],
        true
    );
    let ct_patch = &crd["paths"]
        ["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"];
    assert!(!ct_patch["requestBody"]["content"]
        .as_object()
        .unwrap()
        .contains_key("application/strategic-merge-patch+json"));
    assert_eq!(
        crd["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/scale"]
            ["get"]["x-kubernetes-group-version-kind"]["kind"],
        "Scale"
    );

    let core = v3_document(&served, "api").unwrap();
    assert_eq!(
        core["paths"]["/api/"]["get"]["operationId"],
        "getCoreAPIVersions"
    );
    let group = v3_document(&served, "/apis/apps/").unwrap();
    assert_eq!(
        group["paths"]["/apis/apps/"]["get"]["operationId"],
        "getAppsAPIGroup"
    );
}

#[test]
fn unknown_fields_reports_typos_at_depth() {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"app": "web", "anything.example.com/x": "y"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "nginx", "resources": {"limits": {"cpu": "500m", "memory": 1024}}},
                        {"name": "b", "imagee": "nginx", "ports": [{"containerPort": 80, "protocl": "TCP"}]},
                    ],
                    "nodeSelector": {"disk": "ssd"},
                },
            },
        },
        "status": {"replicas": 2},
    });
    assert_eq!(
        unknown_fields("io.k8s.api.apps.v1.Deployment", &deployment),
        vec![
            "spec.template.spec.containers[1].imagee".to_string(),
            "spec.template.spec.containers[1].ports[0].protocl".to_string(),
        ]
    );
    // The examples from upstream bug reports.
    let misplaced = json!({"spec": {"template": {"metadata": {"containers": [], "volumes": []}, "spec": {"containers": []}}}});
    assert_eq!(
        unknown_fields("io.k8s.api.apps.v1.Deployment", &misplaced),
        vec![
            "spec.template.metadata.containers",
            "spec.template.metadata.volumes"
        ]
    );
    assert_eq!(
        unknown_fields(
            "io.k8s.api.apps.v1.Deployment",
            &json!({"metadata": {"name": "x", "spec": {}}})
        ),
        vec!["metadata.spec"]
    );
    assert_eq!(
        unknown_fields(
            "io.k8s.api.core.v1.Pod",
            &json!({"spec": {"initContainers": [{"name": "i", "restartPolicy": "Always", "restartPolicyy": 1}]}})
        ),
        vec!["spec.initContainers[0].restartPolicyy"]
    );
    assert!(unknown_fields("io.k8s.api.apps.v1.Deployment", &json!({"spec": {}})).is_empty());
    assert!(unknown_fields("no.such.Definition", &json!({"x": 1})).is_empty());
}

#[test]
fn unknown_fields_ignores_maps_and_opaque_values() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"any-key": "v"}, "binaryData": {"k": "AAAA"}});
    assert!(unknown_fields("io.k8s.api.core.v1.ConfigMap", &cm).is_empty());
    // RawExtension: ControllerRevision.data may hold anything.
    let cr = json!({"metadata": {"name": "r"}, "revision": 1, "data": {"spec": {"whatever": [1, {"x": 2}]}}});
    assert!(unknown_fields("io.k8s.api.apps.v1.ControllerRevision", &cr).is_empty());
    // A CRD manifest: JSONSchemaProps maps, JSON defaults and unions.
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "names": {"kind": "CronTab", "plural": "crontabs"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {"cronSpec": {"type": "string", "default": "* * * * */5"}, "list": {"type": "array", "items": {"type": "string"}}},
                        "x-kubernetes-validations": [{"rule": "self.cronSpec != ''"}],
                    }},
                }},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
            }],
        },
    });
    let def = definition_name("apiextensions.k8s.io", "v1", "CustomResourceDefinition").unwrap();
    assert!(
        unknown_fields(def, &crd).is_empty(),
        "{:?}",
        unknown_fields(def, &crd)
    );
    let mut bad = crd.clone();
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["typo"] =
        json!(1);
    assert_eq!(
        unknown_fields(def, &bad),
        vec!["spec.versions[0].schema.openAPIV3Schema.properties[spec].typo"]
    );
}

#[test]
fn unknown_fields_caps_at_one_hundred() {
    let mut data = Map::new();
    for i in 0..150 {
        data.insert(format!("f{i:03}"), json!(1));
    }
    let out = unknown_fields(
        "io.k8s.api.core.v1.Pod",
        &json!({"spec": Value::Object(data)}),
    );
    assert_eq!(out.len(), 100);
}
