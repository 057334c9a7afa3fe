use super::*;
use crate::defaults::apply;
use serde_json::{json, Value};

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn cause(reason: &'static str, field: &str, message: &str) -> Cause {
    Cause {
        reason,
        message: message.to_string(),
        field: field.to_string(),
    }
}

/// Defaults then validates, as the API server does on create.
fn create(group: &str, kind: &str, mut o: Value) -> Vec<Cause> {
    apply(group, "v1", kind, &mut o);
    validate(group, "v1", kind, &o, None)
}

fn pod(containers: Value) -> Value {
    json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":containers}})
}

fn deployment(sel: Value, labels: Value) -> Value {
    json!({"metadata":{"name":"web","namespace":"default"},"spec":{"selector":{"matchLabels":sel},
      "template":{"metadata":{"labels":labels},"spec":{"containers":[{"name":"web","image":"nginx"}]}}}})
}

#[test]
fn valid_kubectl_objects_pass() {
    assert_eq!(
        create(
            "",
            "Pod",
            pod(
                json!([{"name":"nginx","image":"nginx","ports":[{"containerPort":80,"name":"http"}]}])
            )
        ),
        vec![]
    );
    assert_eq!(
        create(
            "apps",
            "Deployment",
            deployment(json!({"app":"web"}), json!({"app":"web"}))
        ),
        vec![]
    );
    let svc = json!({"metadata":{"name":"web","namespace":"default"},"spec":{"ports":[{"port":80}],"selector":{"app":"web"}}});
    assert_eq!(create("", "Service", svc), vec![]);
    let job = json!({"metadata":{"name":"pi","namespace":"default","uid":"u1"},"spec":{"template":{"spec":{"containers":[{"name":"pi","image":"perl"}],"restartPolicy":"Never"}}}});
    assert_eq!(create("batch", "Job", job), vec![]);
}

#[test]
fn metadata_rules() {
    let c = validate_meta(&json!({"namespace":"default"}), true, NameRule::Subdomain);
    assert_eq!(
        c,
        vec![cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required"
        )]
    );
    let c = validate_meta(&json!({"name":"Foo"}), false, NameRule::Subdomain);
    assert_eq!(c[0].message, "Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
    let c = validate_meta(
        &json!({"name":"n","namespace":"x"}),
        false,
        NameRule::Subdomain,
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueForbidden",
            "metadata.namespace",
            "Forbidden: not allowed on this type"
        )]
    );
    let c = validate_meta(&json!({"name":"n"}), true, NameRule::Subdomain);
    assert_eq!(
        c,
        vec![cause(
            "FieldValueRequired",
            "metadata.namespace",
            "Required value"
        )]
    );
    // generateName may end in '-'.
    assert!(validate_meta(
        &json!({"generateName":"web-","name":"web-x7k2p","namespace":"d"}),
        true,
        NameRule::Subdomain
    )
    .is_empty());
    let big = "x".repeat(256 * 1024);
    let c = validate_meta(
        &json!({"name":"n","annotations":{"a":big}}),
        false,
        NameRule::Subdomain,
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueTooLong",
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes"
        )]
    );
    let c = validate_meta(
        &json!({"name":"n","labels":{"app":"bad value"}}),
        false,
        NameRule::Subdomain,
    );
    assert_eq!(c[0].field, "metadata.labels");
    assert!(c[0]
        .message
        .starts_with("Invalid value: \"bad value\": a valid label must be an empty string"));
    let c = validate_meta(
        &json!({"name":"n","finalizers":["foo"]}),
        false,
        NameRule::Subdomain,
    );
    assert_eq!(c, vec![cause("FieldValueInvalid", "metadata.finalizers[0]", "Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified")]);
    let c = validate_meta(
        &json!({"name":"n","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs"}]}),
        false,
        NameRule::Subdomain,
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "metadata.ownerReferences.uid",
            "Invalid value: \"\": must not be empty"
        )]
    );
}

#[test]
fn name_rules_per_kind() {
    assert_eq!(name_rule("", "Namespace"), NameRule::Label);
    assert_eq!(name_rule("", "Service"), NameRule::Dns1035Label);
    assert_eq!(
        name_rule("rbac.authorization.k8s.io", "ClusterRole"),
        NameRule::PathSegment
    );
    assert_eq!(name_rule("apps", "Deployment"), NameRule::Subdomain);
    let c = validate(
        "",
        "v1",
        "Namespace",
        &json!({"metadata":{"name":"a.b"}}),
        None,
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "metadata.name",
            "Invalid value: \"a.b\": must not contain dots"
        )]
    );
    let c = create(
        "",
        "Service",
        json!({"metadata":{"name":"1web","namespace":"d"},"spec":{"ports":[{"port":80}]}}),
    );
    assert!(c[0].message.contains("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character"));
    assert!(validate(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        &json!({"metadata":{"name":"system:controller:x"}}),
        None
    )
    .is_empty());
}

#[test]
fn pod_container_rules() {
    let c = create("", "Pod", pod(json!([])));
    assert_eq!(
        c,
        vec![cause(
            "FieldValueRequired",
            "spec.containers",
            "Required value"
        )]
    );
    let c = create("", "Pod", pod(json!([{"name":"Web_1","image":""}])));
    assert_eq!(
        c,
        vec![
            cause(
                "FieldValueInvalid",
                "spec.containers[0].name",
                &format!("Invalid value: \"Web_1\": {LABEL_MSG}")
            ),
            cause(
                "FieldValueRequired",
                "spec.containers[0].image",
                "Required value"
            ),
        ]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x"},{"name":"a","image":"y"}])),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueDuplicate",
            "spec.containers[1].name",
            "Duplicate value: \"a\""
        )]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","ports":[{"containerPort":70000,"protocol":"HTTP"}]}])),
    );
    assert_eq!(
        c,
        vec![
            cause(
                "FieldValueInvalid",
                "spec.containers[0].ports[0].containerPort",
                "Invalid value: 70000: must be between 1 and 65535, inclusive"
            ),
            cause(
                "FieldValueNotSupported",
                "spec.containers[0].ports[0].protocol",
                "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
            ),
        ]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","volumeMounts":[{"name":"data","mountPath":"/data"}]}])),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueNotFound",
            "spec.containers[0].volumeMounts[0].name",
            "Not found: \"data\""
        )]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","env":[{"name":"A=B","value":"1"}]}])),
    );
    assert_eq!(c, vec![cause("FieldValueInvalid", "spec.containers[0].env[0].name", "Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='")]);
    let c = create(
        "",
        "Pod",
        pod(
            json!([{"name":"a","image":"x","livenessProbe":{"exec":{"command":["true"]},"successThreshold":2}}]),
        ),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "spec.containers[0].livenessProbe.successThreshold",
            "Invalid value: 2: must be 1"
        )]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","readinessProbe":{}}])),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueRequired",
            "spec.containers[0].readinessProbe",
            "Required value: must specify a handler type"
        )]
    );
}

#[test]
fn pod_spec_enums_and_volumes() {
    let mut p = pod(json!([{"name":"a","image":"x"}]));
    p["spec"]["restartPolicy"] = json!("Sometimes");
    p["spec"]["dnsPolicy"] = json!("Cluster");
    let c = create("", "Pod", p);
    assert_eq!(c, vec![
        cause("FieldValueNotSupported", "spec.restartPolicy", "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""),
        cause("FieldValueNotSupported", "spec.dnsPolicy", "Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""),
    ]);
    let mut p = pod(json!([{"name":"a","image":"x"}]));
    p["spec"]["volumes"] = json!([{"name":"v","emptyDir":{}},{"name":"v","emptyDir":{}},{"name":"w","emptyDir":{},"hostPath":{"path":"/x"}}]);
    let c = create("", "Pod", p);
    assert_eq!(
        c,
        vec![
            cause(
                "FieldValueDuplicate",
                "spec.volumes[1].name",
                "Duplicate value: \"v\""
            ),
            cause(
                "FieldValueForbidden",
                "spec.volumes[2].hostPath",
                "Forbidden: may not specify more than 1 volume type"
            ),
        ]
    );
}

#[test]
fn resource_requirements() {
    let c = create(
        "",
        "Pod",
        pod(
            json!([{"name":"a","image":"x","resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}]),
        ),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "spec.containers[0].resources.requests",
            "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        )]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","resources":{"requests":{"memory":"-1Mi"}}}])),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "spec.containers[0].resources.requests[memory]",
            "Invalid value: \"-1Mi\": must be greater than or equal to 0"
        )]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","resources":{"requests":{"example.com/gpu":"1"}}}])),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueRequired",
            "spec.containers[0].resources.limits",
            "Required value: Limit must be set for non overcommitable resources"
        )]
    );
    let c = create(
        "",
        "Pod",
        pod(json!([{"name":"a","image":"x","resources":{"limits":{"gpu":"1"}}}])),
    );
    // Requests are defaulted from limits, so both maps report the bad name.
    assert_eq!(
        c,
        vec![
            cause(
                "FieldValueInvalid",
                "spec.containers[0].resources.limits[gpu]",
                "Invalid value: \"gpu\": must be a standard resource type or fully qualified"
            ),
            cause(
                "FieldValueInvalid",
                "spec.containers[0].resources.limits[gpu]",
                "Invalid value: \"gpu\": must be a standard resource for containers"
            ),
            cause(
                "FieldValueInvalid",
                "spec.containers[0].resources.requests[gpu]",
                "Invalid value: \"gpu\": must be a standard resource type or fully qualified"
            ),
            cause(
                "FieldValueInvalid",
                "spec.containers[0].resources.requests[gpu]",
                "Invalid value: \"gpu\": must be a standard resource for containers"
            ),
        ]
    );
}

#[test]
fn pod_update_immutability() {
    let mut old = pod(json!([{"name":"a","image":"nginx:1.26"}]));
    apply("", "v1", "Pod", &mut old);
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    assert!(validate("", "v1", "Pod", &new, Some(&old)).is_empty());
    new["spec"]["restartPolicy"] = json!("Never");
    let c = validate("", "v1", "Pod", &new, Some(&old));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].field, "spec");
    assert_eq!(c[0].reason, "FieldValueForbidden");
    assert!(c[0].message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
    assert!(c[0].message.contains("restartPolicy"));
    let mut more = old.clone();
    more["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name":"b","image":"x"}));
    let c = validate("", "v1", "Pod", &more, Some(&old));
    assert!(c.contains(&cause(
        "FieldValueForbidden",
        "spec.containers",
        "Forbidden: pod updates may not add or remove containers"
    )));
}

#[test]
fn workload_selectors_and_templates() {
    let c = create(
        "apps",
        "Deployment",
        deployment(json!({"app":"web"}), json!({"app":"api"})),
    );
    assert_eq!(c, vec![cause("FieldValueInvalid", "spec.template.metadata.labels", "Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`")]);
    let mut d = deployment(json!({"app":"web"}), json!({"app":"web"}));
    d["spec"]["replicas"] = json!(-1);
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let c = create("apps", "Deployment", d);
    assert_eq!(
        c,
        vec![
            cause(
                "FieldValueInvalid",
                "spec.replicas",
                "Invalid value: -1: must be greater than or equal to 0"
            ),
            cause(
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                "Unsupported value: \"Never\": supported values: \"Always\""
            ),
        ]
    );
    let mut d = deployment(json!({"app":"web"}), json!({"app":"web"}));
    d["spec"]["strategy"] =
        json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":0,"maxUnavailable":0}});
    let c = create("apps", "Deployment", d);
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "Invalid value: 0: may not be 0 when `maxSurge` is 0"
        )]
    );
    let mut d = deployment(json!({"app":"web"}), json!({"app":"web"}));
    d["spec"].as_object_mut().unwrap().remove("selector");
    let c = create("apps", "Deployment", d);
    assert_eq!(
        c,
        vec![cause(
            "FieldValueRequired",
            "spec.selector",
            "Required value"
        )]
    );
    // Selector immutability on update.
    let mut old = deployment(json!({"app":"web"}), json!({"app":"web","v":"1"}));
    apply("apps", "v1", "Deployment", &mut old);
    let mut new = old.clone();
    new["spec"]["selector"]["matchLabels"]["v"] = json!("1");
    let c = validate("apps", "v1", "Deployment", &new, Some(&old));
    assert_eq!(c, vec![cause("FieldValueInvalid", "spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"1\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable")]);
}

#[test]
fn jobs_cronjobs_statefulsets() {
    let job = json!({"metadata":{"name":"pi","namespace":"d","uid":"u1"},"spec":{"template":{"spec":{"containers":[{"name":"pi","image":"perl"}]}}}});
    let c = create("batch", "Job", job);
    assert_eq!(
        c,
        vec![cause(
            "FieldValueNotSupported",
            "spec.template.spec.restartPolicy",
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        )]
    );
    let cj = json!({"metadata":{"name":"c","namespace":"d"},"spec":{"schedule":"bogus","jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"x"}],"restartPolicy":"OnFailure"}}}}}});
    let c = create("batch", "CronJob", cj);
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "spec.schedule",
            "Invalid value: \"bogus\": expected exactly 5 fields, found 1: [bogus]"
        )]
    );
    let sts = json!({"metadata":{"name":"s","namespace":"d"},"spec":{"serviceName":"s","selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}});
    let mut old = sts.clone();
    apply("apps", "v1", "StatefulSet", &mut old);
    assert!(validate("apps", "v1", "StatefulSet", &old, None).is_empty());
    let mut new = old.clone();
    new["spec"]["serviceName"] = json!("other");
    let c = validate("apps", "v1", "StatefulSet", &new, Some(&old));
    assert_eq!(c[0].message, "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden");

    // Containers may mount the set's volumeClaimTemplates, and only those.
    let mut claims = old.clone();
    claims["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "www", "mountPath": "/www"}]);
    claims["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "www"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
    apply("apps", "v1", "StatefulSet", &mut claims);
    assert!(validate("apps", "v1", "StatefulSet", &claims, None).is_empty());
    claims["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = json!("nope");
    let c = validate("apps", "v1", "StatefulSet", &claims, None);
    assert_eq!(
        c[0].field,
        "spec.template.spec.containers[0].volumeMounts[0].name"
    );
}

#[test]
fn service_rules() {
    let svc = |spec: Value| json!({"metadata":{"name":"web","namespace":"d"},"spec":spec});
    let c = create("", "Service", svc(json!({"selector":{"app":"web"}})));
    assert_eq!(
        c,
        vec![cause("FieldValueRequired", "spec.ports", "Required value")]
    );
    // Headless and ExternalName services need no ports.
    assert!(create("", "Service", svc(json!({"clusterIP":"None"}))).is_empty());
    assert!(create(
        "",
        "Service",
        svc(json!({"type":"ExternalName","externalName":"example.com"}))
    )
    .is_empty());
    let c = create(
        "",
        "Service",
        svc(json!({"ports":[{"port":80},{"port":443}]})),
    );
    assert_eq!(
        c,
        vec![
            cause("FieldValueRequired", "spec.ports[0].name", "Required value"),
            cause("FieldValueRequired", "spec.ports[1].name", "Required value"),
        ]
    );
    let c = create(
        "",
        "Service",
        svc(json!({"type":"NodePort","ports":[{"port":80,"nodePort":80}]})),
    );
    assert_eq!(c, vec![cause("FieldValueInvalid", "spec.ports[0].nodePort", "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767")]);
    let c = create(
        "",
        "Service",
        svc(json!({"type":"Magic","ports":[{"port":0}]})),
    );
    assert!(c.contains(&cause(
        "FieldValueInvalid",
        "spec.ports[0].port",
        "Invalid value: 0: must be between 1 and 65535, inclusive"
    )));
    assert!(c.contains(&cause("FieldValueNotSupported", "spec.type", "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
    let c = create(
        "",
        "Service",
        svc(json!({"clusterIP":"10.0.0.300","ports":[{"port":80}]})),
    );
    assert_eq!(c, vec![cause("FieldValueInvalid", "spec.clusterIPs[0]", "Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]);
    let mut old = svc(json!({"clusterIP":"10.0.0.10","ports":[{"port":80}]}));
    apply("", "v1", "Service", &mut old);
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.0.0.11");
    new["spec"]["clusterIPs"] = json!(["10.0.0.11"]);
    let c = validate("", "v1", "Service", &new, Some(&old));
    assert_eq!(
        c,
        vec![cause(
            "FieldValueInvalid",
            "spec.clusterIPs[0]",
            "Invalid value: []string{\"10.0.0.11\"}: may not change once set"
        )]
    );
}

#[test]
fn configmaps_and_secrets() {
    let cm = |data: Value| json!({"metadata":{"name":"c","namespace":"d"},"data":data});
    let c = create("", "ConfigMap", cm(json!({"bad key":"v"})));
    assert_eq!(c, vec![cause("FieldValueInvalid", "data[bad key]", "Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")]);
    let c = create(
        "",
        "ConfigMap",
        cm(json!({"big":"x".repeat(1024 * 1024 + 1)})),
    );
    assert_eq!(
        c,
        vec![cause(
            "FieldValueTooLong",
            "",
            "Too long: may not be more than 1048576 bytes"
        )]
    );
    let mut old = cm(json!({"k":"v"}));
    old["immutable"] = json!(true);
    let mut new = old.clone();
    new["data"]["k"] = json!("w");
    let c = validate("", "v1", "ConfigMap", &new, Some(&old));
    assert_eq!(
        c,
        vec![cause(
            "FieldValueForbidden",
            "data",
            "Forbidden: field is immutable when `immutable` is set"
        )]
    );
    let tls = json!({"metadata":{"name":"t","namespace":"d"},"type":"kubernetes.io/tls","data":{"tls.crt":"eA=="}});
    assert_eq!(
        create("", "Secret", tls),
        vec![cause(
            "FieldValueRequired",
            "data[tls.key]",
            "Required value"
        )]
    );
    let old = json!({"metadata":{"name":"t","namespace":"d"},"type":"Opaque"});
    let new = json!({"metadata":{"name":"t","namespace":"d"},"type":"kubernetes.io/tls","data":{"tls.crt":"","tls.key":""}});
    assert_eq!(
        validate("", "v1", "Secret", &new, Some(&old)),
        vec![cause(
            "FieldValueInvalid",
            "type",
            "Invalid value: \"kubernetes.io/tls\": field is immutable"
        )]
    );
}

#[test]
fn rbac_lease_node() {
    let role = json!({"metadata":{"name":"r","namespace":"d"},"rules":[{"apiGroups":[""],"resources":["pods"]}]});
    assert_eq!(
        validate("rbac.authorization.k8s.io", "v1", "Role", &role, None),
        vec![cause(
            "FieldValueRequired",
            "rules[0].verbs",
            "Required value: verbs must contain at least one value"
        )]
    );
    let rb = json!({"metadata":{"name":"rb","namespace":"d"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Pod","name":"x"},"subjects":[{"kind":"User","name":"jane","apiGroup":"rbac.authorization.k8s.io"}]});
    assert_eq!(
        validate("rbac.authorization.k8s.io", "v1", "RoleBinding", &rb, None),
        vec![cause(
            "FieldValueNotSupported",
            "roleRef.kind",
            "Unsupported value: \"Pod\": supported values: \"Role\", \"ClusterRole\""
        )]
    );
    let lease = json!({"metadata":{"name":"l","namespace":"d"},"spec":{"leaseDurationSeconds":0}});
    assert_eq!(
        validate("coordination.k8s.io", "v1", "Lease", &lease, None),
        vec![cause(
            "FieldValueInvalid",
            "spec.leaseDurationSeconds",
            "Invalid value: 0: must be greater than 0"
        )]
    );
    let node =
        json!({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"k","effect":"Sometimes"}]}});
    assert_eq!(validate("", "v1", "Node", &node, None),
        vec![cause("FieldValueNotSupported", "metadata.taints[0].effect", "Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"")]);
}

#[test]
fn garbage_input_never_panics() {
    for v in [
        json!(null),
        json!(5),
        json!({"spec": "x", "metadata": 3}),
        json!({"spec":{"containers":[1, null, {"ports":"x"}]}}),
    ] {
        for (g, k) in [
            ("", "Pod"),
            ("apps", "Deployment"),
            ("", "Service"),
            ("batch", "CronJob"),
            ("", "ConfigMap"),
        ] {
            let mut o = v.clone();
            apply(g, "v1", k, &mut o);
            let _ = validate(g, "v1", k, &o, Some(&v));
        }
    }
}
