use super::apply;
use serde_json::json;

/// What `kubectl create deployment nginx --image=nginx` sends.
fn kubectl_deployment() -> serde_json::Value {
    json!({"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"nginx","creationTimestamp":null,"labels":{"app":"nginx"}},
      "spec":{"replicas":1,"selector":{"matchLabels":{"app":"nginx"}},
        "template":{"metadata":{"creationTimestamp":null,"labels":{"app":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx","resources":{}}]}},
        "strategy":{}},"status":{}})
}

fn defaulted_template_spec(image_pull: &str) -> serde_json::Value {
    json!({"containers":[{"name":"nginx","image":"nginx","resources":{},"imagePullPolicy":image_pull,
        "terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],
      "dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler",
      "securityContext":{},"terminationGracePeriodSeconds":30})
}

#[test]
fn deployment_from_kubectl_create_matches_upstream() {
    let mut d = kubectl_deployment();
    apply("apps", "v1", "Deployment", &mut d);
    let spec = &d["spec"];
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"}})
    );
    assert_eq!(spec["template"]["spec"], defaulted_template_spec("Always"));
    assert_eq!(
        spec["template"]["metadata"]["creationTimestamp"],
        serde_json::Value::Null
    );
    // Idempotent: a second pass changes nothing.
    let again = {
        let mut x = d.clone();
        apply("apps", "v1", "Deployment", &mut x);
        x
    };
    assert_eq!(again, d);
}

#[test]
fn pod_from_kubectl_run_gets_pod_only_defaults() {
    let mut p = json!({"kind":"Pod","apiVersion":"v1","metadata":{"name":"nginx","creationTimestamp":null,"labels":{"run":"nginx"}},
      "spec":{"containers":[{"name":"nginx","image":"nginx:1.27","resources":{}}],"restartPolicy":"Always","dnsPolicy":"ClusterFirst"},"status":{}});
    apply("", "v1", "Pod", &mut p);
    let spec = &p["spec"];
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(
        spec["tolerations"],
        json!([
        {"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},
        {"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}])
    );
    assert_eq!(
        p["status"],
        json!({"phase":"Pending","qosClass":"BestEffort"})
    );
}

#[test]
fn pod_requests_default_to_limits_and_qos_follows() {
    let mut p = json!({"metadata":{"name":"g"},"spec":{"containers":[{"name":"c","image":"busybox",
        "resources":{"limits":{"cpu":"500m","memory":"64Mi"}}}]}});
    apply("", "v1", "Pod", &mut p);
    assert_eq!(
        p["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu":"500m","memory":"64Mi"})
    );
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    let mut b = json!({"metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"busybox",
        "resources":{"requests":{"cpu":"100m"}}}]}});
    apply("", "v1", "Pod", &mut b);
    assert_eq!(b["status"]["qosClass"], "Burstable");
}

#[test]
fn probes_volumes_and_ports_are_defaulted() {
    let mut p = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x",
        "ports":[{"containerPort":80}],
        "livenessProbe":{"httpGet":{"port":80}},
        "env":[{"name":"NODE","valueFrom":{"fieldRef":{"fieldPath":"spec.nodeName"}}}]}],
      "volumes":[{"name":"scratch"},{"name":"cfg","configMap":{"name":"cfg"}}]}});
    apply("", "v1", "Pod", &mut p);
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet":{"port":80,"path":"/","scheme":"HTTP"},
        "timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3})
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(p["spec"]["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(p["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
}

#[test]
fn service_defaults_like_kubectl_expose() {
    let mut s =
        json!({"metadata":{"name":"web"},"spec":{"ports":[{"port":80}],"selector":{"app":"web"}}});
    apply("", "v1", "Service", &mut s);
    assert_eq!(
        s["spec"],
        json!({"ports":[{"port":80,"protocol":"TCP","targetPort":80}],"selector":{"app":"web"},
        "sessionAffinity":"None","type":"ClusterIP","internalTrafficPolicy":"Cluster",
        "ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]})
    );
    assert_eq!(s["status"], json!({"loadBalancer":{}}));
    let mut lb = json!({"metadata":{"name":"lb"},"spec":{"type":"LoadBalancer","ports":[{"port":443,"targetPort":"https"}]}});
    apply("", "v1", "Service", &mut lb);
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], "https");
}

#[test]
fn jobs_and_cronjobs() {
    let mut j = json!({"metadata":{"name":"pi","uid":"u-1"},"spec":{"template":{"spec":{"containers":[{"name":"pi","image":"perl"}],"restartPolicy":"Never"}}}});
    apply("batch", "v1", "Job", &mut j);
    let s = &j["spec"];
    assert_eq!(
        (
            s["completions"].clone(),
            s["parallelism"].clone(),
            s["backoffLimit"].clone()
        ),
        (json!(1), json!(1), json!(6))
    );
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(
        s["selector"],
        json!({"matchLabels":{"batch.kubernetes.io/controller-uid":"u-1"}})
    );
    assert_eq!(s["template"]["metadata"]["labels"]["job-name"], "pi");
    assert_eq!(
        j["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "pi"
    );
    let mut cj = json!({"metadata":{"name":"c"},"spec":{"schedule":"*/1 * * * *","jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox"}],"restartPolicy":"OnFailure"}}}}}});
    apply("batch", "v1", "CronJob", &mut cj);
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
}

#[test]
fn other_workloads_namespaces_and_claims() {
    let mut ds = json!({"metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":[{"name":"c","image":"x"}]}}}});
    apply("apps", "v1", "DaemonSet", &mut ds);
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":1,"maxSurge":0}})
    );
    let mut sts = json!({"metadata":{"name":"s"},"spec":{"serviceName":"s","template":{"spec":{"containers":[{"name":"c","image":"x"}]}}}});
    apply("apps", "v1", "StatefulSet", &mut sts);
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({"type":"RollingUpdate","rollingUpdate":{"partition":0}})
    );
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted":"Retain","whenScaled":"Retain"})
    );
    let mut ns = json!({"metadata":{"name":"dev"}});
    apply("", "v1", "Namespace", &mut ns);
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name":"dev"})
    );
    // Only create sets spec.finalizers (the API server's namespace strategy).
    assert!(ns.get("spec").is_none());
    assert_eq!(ns["status"], json!({"phase":"Active"}));
    let mut pvc = json!({"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}});
    apply("", "v1", "PersistentVolumeClaim", &mut pvc);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let mut sec = json!({"metadata":{"name":"s"},"data":{}});
    apply("", "v1", "Secret", &mut sec);
    assert_eq!(sec["type"], "Opaque");
    let mut rb = json!({"metadata":{"name":"rb"},"subjects":[{"kind":"User","name":"jane"},{"kind":"ServiceAccount","name":"default","namespace":"x"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"r"}});
    apply("rbac.authorization.k8s.io", "v1", "RoleBinding", &mut rb);
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert!(rb["subjects"][1].get("apiGroup").is_none());
}

#[test]
fn non_objects_are_left_alone() {
    let mut v = json!("not an object");
    apply("", "v1", "Pod", &mut v);
    assert_eq!(v, json!("not an object"));
    let mut weird = json!({"spec": 5});
    apply("apps", "v1", "Deployment", &mut weird);
    assert_eq!(weird["spec"], 5);
}
