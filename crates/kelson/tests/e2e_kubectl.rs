//! End to end: the real `kelson server` driven by real kubectl (1.32, plus a
//! smoke run with 1.27 and 1.33), as a user would.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectl_bin, Cluster};

fn deployment(env_value: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports: [{{containerPort: 80}}]
        env: [{{name: MODE, value: "{env_value}"}}, {{name: KEEP, value: "yes"}}]
      - name: side
        image: busybox:1.36
"#
    )
}

#[test]
fn discovery_and_bootstrap_objects() {
    let c = Cluster::start();
    let res = c.ok(&["api-resources"]);
    for line in [
        "deployments  ",
        "pods  ",
        "customresourcedefinitions",
        "horizontalpodautoscalers",
        "leases",
    ] {
        assert!(res.contains(line), "api-resources lacks {line}: {res}");
    }
    assert!(res.lines().any(|l| l.starts_with("deployments")
        && l.contains("deploy")
        && l.contains("apps/v1")
        && l.contains("true")));
    let versions = c.ok(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "autoscaling/v1",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(versions.lines().any(|l| l == gv), "api-versions lacks {gv}");
    }
    let ns = c.ok(&["get", "ns", "-o", "jsonpath={.items[*].metadata.name}"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.split(' ').any(|x| x == n), "namespace {n} missing: {ns}");
    }
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        "10.43.0.1"
    );
    let explain = c.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explain.contains("replicas") && explain.contains("integer"),
        "{explain}"
    );
    assert_eq!(c.ok(&["get", "--raw", "/readyz"]), "ok");
}

#[test]
fn workload_lifecycle_with_kubectl() {
    let c = Cluster::start();
    let f = c.write("web.yaml", &deployment("a", "nginx:1.25"));
    assert!(c
        .ok(&["apply", "-f", &f])
        .contains("deployment.apps/web created"));
    // Defaults as upstream fills them.
    let y = c.ok(&["get", "deploy", "web", "-o", "yaml"]);
    for want in [
        "revisionHistoryLimit: 10",
        "progressDeadlineSeconds: 600",
        "type: RollingUpdate",
        "maxSurge: 25%",
        "terminationMessagePath: /dev/termination-log",
        "imagePullPolicy: IfNotPresent",
        "schedulerName: default-scheduler",
    ] {
        assert!(y.contains(want), "defaulted yaml lacks {want:?}:\n{y}");
    }
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "1"
    );

    // Client-side apply again with changes: merged by name, generation bumped.
    let f = c.write("web.yaml", &deployment("b", "nginx:1.26"));
    assert!(c.ok(&["apply", "-f", &f]).contains("configured"));
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env[0].value},{.spec.template.spec.containers[0].image},{.metadata.generation}"]), "b,nginx:1.26,2");
    // Removing a container from the file removes it from the object.
    let one = deployment("b", "nginx:1.26")
        .replace("      - name: side\n        image: busybox:1.36\n", "");
    let f1 = c.write("web1.yaml", &one);
    c.ok(&["apply", "-f", &f1]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "web"
    );
    // Unchanged re-apply is a no-op: kubectl sends no patch, and spec,
    // generation and annotations stay. (Not the resourceVersion: the
    // deployment controller may write status meanwhile.)
    let object = "jsonpath={.metadata.generation} {.metadata.annotations} {.spec}";
    let before = c.ok(&["get", "deploy", "web", "-o", object]);
    assert!(c.ok(&["apply", "-f", &f1]).contains("unchanged"));
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", object]), before);
    assert!(c.ok(&["diff", "-f", &f1]).is_empty());

    // Output formats.
    let wide = c.ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        wide.starts_with("NAME")
            && wide.contains("READY")
            && wide.contains("UP-TO-DATE")
            && wide.contains("CONTAINERS")
            && wide.contains("nginx:1.26"),
        "{wide}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "Deployment");
    assert!(json["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    let cc = c.ok(&[
        "get",
        "deploy",
        "-o",
        "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas",
    ]);
    assert!(cc.contains("web    2"), "{cc}");

    // label, annotate, selectors.
    c.ok(&["label", "deploy", "web", "tier=frontend"]);
    c.ok(&["annotate", "deploy", "web", "owner=team-a"]);
    assert!(c
        .ok(&["get", "deploy", "--show-labels"])
        .contains("app=web,tier=frontend"));
    assert!(c
        .ok(&["get", "deploy", "-l", "tier=frontend", "-o", "name"])
        .contains("deployment.apps/web"));
    assert!(c
        .ok(&["get", "deploy", "-l", "tier=backend", "-o", "name"])
        .is_empty());
    assert!(c
        .ok(&[
            "get",
            "deploy",
            "--field-selector",
            "metadata.name=web",
            "-o",
            "name"
        ])
        .contains("web"));
    assert!(c
        .fails(&["get", "pods", "--field-selector", "spec.bogus=x"])
        .contains("field label not supported"));

    // patch: all three types; scale.
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ]);
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    c.ok(&["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"c"}]}]}}}}"#]);
    assert_eq!(
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas},{.metadata.labels.patched},{.spec.template.spec.containers[0].env[*].value}"]),
        "3,merge,c yes",
        "strategic patch merges env by name"
    );
    c.ok(&["scale", "deploy", "web", "--replicas=5"]);
    assert_eq!(
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );

    // edit with a scripted editor.
    let editor = c.write(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 7/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(kubectl_bin(32))
        .args(["edit", "deploy", "web"])
        .env("KUBECONFIG", c.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );

    // describe.
    let d = c.ok(&["describe", "deploy", "web"]);
    assert!(
        d.contains("Name:")
            && d.contains("web")
            && d.contains("Selector:")
            && d.contains("app=web"),
        "{d}"
    );

    // Server-side apply: creates, then updates, records the manager.
    let cm = c.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n",
    );
    assert!(c
        .ok(&["apply", "--server-side", "-f", &cm])
        .contains("serverside-applied"));
    let cm2 = c.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: green\n",
    );
    c.ok(&["apply", "--server-side", "-f", &cm2]);
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]),
        "green"
    );
    assert!(c
        .ok(&[
            "get",
            "cm",
            "settings",
            "-o",
            "yaml",
            "--show-managed-fields"
        ])
        .contains("manager: kubectl"));
    // Another manager's change to a field the applier owns is a conflict
    // with upstream's message; --force-conflicts takes the field back; a
    // field left out of the next apply is removed.
    c.ok(&[
        "patch",
        "cm",
        "settings",
        "--field-manager=tuner",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    let conflict = c.fails(&["apply", "--server-side", "-f", &cm2]);
    assert!(
        conflict.contains(
            r#"Apply failed with 1 conflict: conflict with "tuner" using v1: .data.color"#
        ),
        "{conflict}"
    );
    c.ok(&["apply", "--server-side", "--force-conflicts", "-f", &cm2]);
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]),
        "green"
    );
    let cm3 = c.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  size: L\n",
    );
    c.ok(&["apply", "--server-side", "-f", &cm3]);
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]),
        r#"{"size":"L"}"#
    );

    // Deletes: by file, by label, and a missing object is a 404.
    c.ok(&["label", "cm", "settings", "del=me"]);
    assert!(c
        .ok(&["delete", "cm", "-l", "del=me"])
        .contains("configmap \"settings\" deleted"));
    assert!(c.ok(&["delete", "-f", &f1]).contains("deleted"));
    assert!(c
        .fails(&["get", "deploy", "web"])
        .contains("deployments.apps \"web\" not found"));
}

#[test]
fn watch_sees_changes() {
    let c = Cluster::start();
    let w = Command::new(kubectl_bin(32))
        .args(["get", "cm", "-w", "--output-watch-events"])
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let f = c.write(
        "w.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata: {a: b}\n",
    );
    c.ok(&["create", "-f", &f]);
    c.ok(&["delete", "cm", "watched"]);
    std::thread::sleep(Duration::from_millis(800));
    let _ = Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status();
    let out = w.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ADDED") && l.contains("watched")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("DELETED") && l.contains("watched")),
        "{text}"
    );
}

#[test]
fn custom_resources_end_to_end() {
    let c = Cluster::start();
    let crd = c.write(
        "crd.yaml",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Schedule, type: string, jsonPath: .spec.cronSpec}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {type: string, pattern: '^(\S+ ){4}\S+$'}
              replicas: {type: integer, minimum: 0, maximum: 10}
              image: {type: string, default: "busybox"}
          status:
            type: object
            properties:
              replicas: {type: integer}
"#,
    );
    c.ok(&["apply", "-f", &crd]);
    c.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=20s",
    ]);
    let ct = c.write("ct.yaml", "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: nightly\nspec:\n  cronSpec: \"0 3 * * *\"\n  replicas: 1\n");
    // Discovery may take a moment to be re-read by kubectl.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.kubectl(&["apply", "-f", &ct]).status.success() {
        assert!(
            Instant::now() < deadline,
            "custom resource never became usable"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = c.ok(&["get", "ct"]);
    assert!(
        table.contains("SCHEDULE") && table.contains("0 3 * * *"),
        "{table}"
    );
    c.ok(&["scale", "ct", "nightly", "--replicas=4"]);
    assert_eq!(
        c.ok(&[
            "get",
            "crontab",
            "nightly",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );
    assert!(c
        .ok(&["api-resources", "--api-group=stable.example.com"])
        .contains("crontabs"));
    // The schema defaults, prunes and validates.
    assert_eq!(
        c.ok(&["get", "ct", "nightly", "-o", "jsonpath={.spec.image}"]),
        "busybox"
    );
    let extra = c.write("ct-extra.yaml", "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: extra\nspec:\n  cronSpec: \"* * * * *\"\n  colour: red\n");
    let out = c.kubectl(&["apply", "-f", &extra, "--validate=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&["get", "ct", "extra", "-o", "jsonpath={.spec}"]),
        r#"{"cronSpec":"* * * * *","image":"busybox"}"#
    );
    let bad = c.write("ct-bad.yaml", "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  cronSpec: \"often\"\n  replicas: 11\n");
    let err = c.fails(&["apply", "-f", &bad]);
    assert!(
        err.contains("spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10")
            && err.contains("spec.cronSpec: Invalid value: \"often\": spec.cronSpec in body should match"),
        "{err}"
    );
    // A schema that is not structural is refused with the field named.
    let loose = c.write("crd-loose.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: loose.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: loose, kind: Loose}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec: {properties: {a: {type: string}}}\n");
    let err = c.fails(&["apply", "-f", &loose]);
    assert!(
        err.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"
        ),
        "{err}"
    );
    c.ok(&["delete", "ct", "nightly"]);
    c.ok(&["delete", "-f", &crd]);
    assert!(!c.ok(&["api-resources"]).contains("crontabs"));
}

#[test]
fn errors_users_see() {
    let c = Cluster::start();
    // 401 for a token the server does not know.
    let anon = c.write(
        "anon.yaml",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: https://127.0.0.1:{}\n  name: c\ncontexts:\n- context: {{cluster: c, user: u}}\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: not-a-real-token}}\n",
            c.port
        ),
    );
    let out = c.kubectl(&["--kubeconfig", &anon, "get", "pods"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // 404.
    assert!(c
        .fails(&["get", "pod", "nope"])
        .contains("pods \"nope\" not found"));
    // 422 with the field named.
    let bad = c.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let e = c.fails(&["create", "-f", &bad]);
    assert!(
        e.contains("is invalid") && e.contains("metadata.name"),
        "{e}"
    );
    // 409 on a stale update.
    let cm = c.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata: {a: '1'}\n",
    );
    c.ok(&["create", "-f", &cm]);
    let old = c.ok(&["get", "cm", "c1", "-o", "yaml"]);
    c.ok(&[
        "patch",
        "cm",
        "c1",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    let stale = c.write("stale.yaml", &old.replace("a: \"1\"", "a: \"3\""));
    let e = c.fails(&["replace", "-f", &stale]);
    assert!(e.contains("the object has been modified"), "{e}");
    // 400 for an unknown field under Strict.
    let typo = c.write(
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c2\ndata: {a: b}\nbogusField: 1\n",
    );
    let e = c.fails(&["create", "--validate=strict", "-f", &typo]);
    assert!(
        e.contains("unknown field") && e.contains("bogusField"),
        "{e}"
    );
    // 413 for a body over 3 MiB.
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  a: \"{}\"\n",
        "x".repeat(4 * 1024 * 1024)
    );
    let bigf = c.write("big.yaml", &big);
    let e = c.fails(&["create", "-f", &bigf]);
    assert!(e.to_lowercase().contains("too large"), "{e}");
}

/// Anonymous requests get 401; tokens from --token-auth-file work.
#[test]
fn token_file_and_anonymous_requests() {
    let tokens = "s3cret-token,jane,uid-7,\"dev,ops\"\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, tokens).unwrap();
    let c = Cluster::start_with(&["--token-auth-file", &file.to_string_lossy()]);
    let url = format!("https://127.0.0.1:{}", c.port);
    let with_token = c.write(
        "jane.yaml",
        &format!("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: {url}\n  name: c\ncontexts:\n- context: {{cluster: c, user: u}}\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: s3cret-token}}\n"),
    );
    let out = c.kubectl(&[
        "--kubeconfig",
        &with_token,
        "get",
        "ns",
        "default",
        "-o",
        "name",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No credentials at all: a raw HTTPS request without a certificate or token.
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/api/v1/namespaces"),
        ])
        .output()
        .expect("curl is installed by scripts/deps.sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    // Health endpoints stay open, as upstream's public-info-viewer allows.
    let out = Command::new("curl")
        .args(["-sk", &format!("{url}/readyz")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
}

#[test]
fn state_and_certificates_survive_restart() {
    let mut c = Cluster::start();
    let ca_before = std::fs::read(c.dir.path().join("server/tls/ca.crt")).unwrap();
    let f = c.write("web.yaml", &deployment("a", "nginx:1.25"));
    c.ok(&["apply", "-f", &f]);
    let cm = c.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata: {k: v}\n",
    );
    c.ok(&["create", "-f", &cm]);
    // Let the deployment controller finish its first sync, so that the
    // reads below compare stored state rather than race a status write.
    c.eventually(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.observedGeneration}/{.status.replicas}/{.status.updatedReplicas}",
        ],
        |s| s == "1/2/2",
    );
    let before = c.ok(&["get", "deploy,cm", "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion}/{.metadata.uid} {end}"]);
    c.restart();
    let after = c.ok(&["get", "deploy,cm", "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion}/{.metadata.uid} {end}"]);
    assert_eq!(before, after);
    assert_eq!(
        std::fs::read(c.dir.path().join("server/tls/ca.crt")).unwrap(),
        ca_before
    );
    // The kubeconfig written before the restart still works (same CA, same admin).
    assert!(c
        .ok(&["get", "ns", "default", "-o", "name"])
        .contains("namespace/default"));
}

/// The oldest and newest kubectl end to end: 1.27 needs the protobuf
/// OpenAPI v2 document for apply, 1.33 sends protobuf bodies for imperative
/// creates.
#[test]
fn smoke_with_oldest_and_newest_kubectl() {
    let c = Cluster::start();
    for minor in [27, 33] {
        let ns = format!("smoke-{minor}");
        let run = |args: &[&str]| {
            let out = c.kubectl_v(minor, args);
            assert!(
                out.status.success(),
                "kubectl 1.{minor} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["create", "namespace", &ns]);
        let deployment = |replicas: u32, value: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: c, image: busybox, env: [{{name: A, value: '{value}'}}]}}]\n"
            )
        };
        let f = c.write(&format!("web-{minor}.yaml"), &deployment(1, "1"));
        assert!(run(&["apply", "-f", &f]).contains("deployment.apps/web created"));
        let f = c.write(&format!("web-{minor}.yaml"), &deployment(2, "2"));
        assert!(run(&["apply", "-f", &f]).contains("deployment.apps/web configured"));
        assert_eq!(
            run(&[
                "get",
                "deploy",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].value}"
            ]),
            "2 2"
        );
        run(&["create", "configmap", "cm", "-n", &ns, "--from-literal=v=1"]);
        assert_eq!(
            run(&["get", "cm", "cm", "-n", &ns, "-o", "jsonpath={.data.v}"]),
            "1"
        );
        assert!(run(&["get", "ns"]).contains("kube-system"));
        assert!(run(&["api-resources"]).contains("deployments"));
        assert!(run(&["explain", "pods.spec.containers"]).contains("KIND:"));
    }
}

/// kubectl 1.31+ sends imperative creates as protobuf; the stored objects
/// must be what the JSON form would have produced, upstream defaults
/// included.
#[test]
fn imperative_creates_send_protobuf() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "pb"]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "pb",
        "--image=busybox",
        "--replicas=0",
    ]);
    let d: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "deploy", "web", "-n", "pb", "-o", "json"])).unwrap();
    // replicas is a pointer: an explicit 0 survives.
    assert_eq!(d["spec"]["replicas"], 0);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox");
    // Empty strings the protobuf carries are absent, so defaults apply.
    assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    c.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "pb",
        "--from-literal=k=v",
    ]);
    assert_eq!(
        c.ok(&["get", "secret", "s", "-n", "pb", "-o", "jsonpath={.data.k}"]),
        "dg=="
    );
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "svc",
        "-n",
        "pb",
        "--tcp=80:8080",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "svc",
            "-n",
            "pb",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "8080"
    );
    c.ok(&[
        "create",
        "job",
        "j",
        "-n",
        "pb",
        "--image=busybox",
        "--",
        "true",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "job",
            "j",
            "-n",
            "pb",
            "-o",
            "jsonpath={.spec.backoffLimit}"
        ]),
        "6"
    );
}

/// `kubectl delete namespace` removes what is in it, then the namespace.
#[test]
fn deleting_a_namespace_deletes_its_content() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "gone"]);
    c.ok(&[
        "create",
        "configmap",
        "a",
        "-n",
        "gone",
        "--from-literal=k=v",
    ]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "gone",
        "--image=busybox",
    ]);
    c.ok(&["create", "configmap", "keep", "--from-literal=k=v"]);
    // kubectl waits until the namespace is gone.
    c.ok(&["delete", "namespace", "gone", "--timeout=60s"]);
    assert!(c
        .fails(&["get", "namespace", "gone"])
        .contains("namespaces \"gone\" not found"));
    assert!(c
        .ok(&["get", "configmaps,deployments", "-A", "-o", "name"])
        .contains("configmap/keep"));
    assert!(!c
        .ok(&["get", "deployments", "-A", "-o", "name"])
        .contains("web"));
    // A fresh namespace of the same name starts empty.
    c.ok(&["create", "namespace", "gone"]);
    assert_eq!(
        c.ok(&["get", "all,cm", "-n", "gone", "-o", "name"])
            .lines()
            .filter(|l| !l.contains("kube-root-ca"))
            .count(),
        0
    );
}

/// The controller manager inside `kelson server` reconciles what kubectl
/// creates: Deployments get ReplicaSets and pods, namespaces their default
/// ServiceAccount and root CA, and deleting an owner removes what it owns.
#[test]
fn the_controller_manager_reconciles() {
    let c = Cluster::start();
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]);
    let rs = c.eventually(&["get", "rs", "-l", "app=web", "-o", "name"], |o| {
        o.lines().count() == 1
    });
    assert!(rs.trim().starts_with("replicaset.apps/web-"), "{rs}");
    c.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.lines().count() == 3
    });
    c.ok(&["scale", "deployment", "web", "--replicas=1"]);
    c.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.lines().count() == 1
    });
    let events = c.ok(&[
        "get",
        "events",
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ]);
    assert!(events.contains("ScalingReplicaSet"), "{events}");

    c.ok(&["create", "namespace", "fresh"]);
    c.eventually(
        &[
            "get",
            "serviceaccount",
            "default",
            "-n",
            "fresh",
            "-o",
            "name",
        ],
        |o| o.contains("serviceaccount/default"),
    );
    let ca = c.eventually(
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "fresh",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        |o| o.contains("BEGIN CERTIFICATE"),
    );
    assert!(ca.contains("END CERTIFICATE"));

    // Background deletion: the ReplicaSet and its pods follow the Deployment.
    c.ok(&["delete", "deployment", "web"]);
    c.eventually(&["get", "rs,pods", "-l", "app=web", "-o", "name"], |o| {
        o.trim().is_empty()
    });
}
