//! Bodies built the way client-go's generated Marshal writes them (every
//! non-pointer field, zero or not; nil pointers, slices and maps left out),
//! checked against the JSON Go's `encoding/json` writes for the same struct
//! (e.g. `kubectl create deployment web --image=nginx --dry-run=client -o
//! json`).

use serde_json::json;

use super::schema::{Card, Shape, Ty};
use super::table::{KINDS, MSGS};
use super::*;
use crate::wire::Writer;

fn msg(build: impl FnOnce(&mut Writer)) -> Writer {
    let mut w = Writer::new();
    build(&mut w);
    w
}

/// `k8s\0` + runtime.Unknown{typeMeta, raw, contentEncoding, contentType},
/// as the protobuf serializer writes it.
fn body(api_version: &str, kind: &str, raw: &Writer) -> Vec<u8> {
    let type_meta = msg(|w| {
        w.string(1, api_version);
        w.string(2, kind);
    });
    let unknown = msg(|w| {
        w.message(1, &type_meta);
        w.message(2, raw);
        w.string(3, "");
        w.string(4, "");
    });
    let mut out = b"k8s\0".to_vec();
    out.extend_from_slice(unknown.as_bytes());
    out
}

fn entries(w: &mut Writer, num: u32, pairs: &[(&str, &[u8])]) {
    for (k, v) in pairs {
        let entry = msg(|e| {
            e.string(1, k);
            e.bytes(2, v);
        });
        w.message(num, &entry);
    }
}

/// metav1.Time as Go writes it: nothing for the zero time.
fn time(seconds: Option<i64>) -> Writer {
    msg(|w| {
        if let Some(s) = seconds {
            w.int64(1, s);
            w.varint(2, 0);
        }
    })
}

/// ObjectMeta with every value field written, as Go does.
fn object_meta(
    name: &str,
    namespace: &str,
    labels: &[(&str, &[u8])],
    created: Option<i64>,
) -> Writer {
    msg(|w| {
        w.string(1, name);
        w.string(2, "");
        w.string(3, namespace);
        w.string(4, "");
        w.string(5, "");
        w.string(6, "");
        w.varint(7, 0);
        w.message(8, &time(created));
        entries(w, 11, labels);
    })
}

/// core/v1 Container{Name, Image, Resources} with Go's zero fields.
fn container(name: &str, image: &str, resources: &Writer) -> Writer {
    msg(|w| {
        w.string(1, name);
        w.string(2, image);
        w.string(5, "");
        w.message(8, resources);
        w.string(13, "");
        w.string(14, "");
        w.bool(16, false);
        w.bool(17, false);
        w.bool(18, false);
        w.string(20, "");
    })
}

/// core/v1 PodSpec with the given containers and policies, zeros included.
fn pod_spec(containers: &[Writer], restart: &str, dns: &str) -> Writer {
    msg(|w| {
        for c in containers {
            w.message(2, c);
        }
        w.string(3, restart);
        w.string(6, dns);
        w.string(8, "");
        w.string(9, "");
        w.string(10, "");
        w.bool(11, false);
        w.bool(12, false);
        w.bool(13, false);
        w.string(16, "");
        w.string(17, "");
        w.string(19, "");
        w.string(24, "");
    })
}

fn deployment(replicas: u64) -> Vec<u8> {
    let labels: &[(&str, &[u8])] = &[("app", b"web")];
    let selector = msg(|w| entries(w, 1, labels));
    let template = msg(|w| {
        w.message(1, &object_meta("", "", labels, None));
        w.message(
            2,
            &pod_spec(&[container("nginx", "nginx", &Writer::new())], "", ""),
        );
    });
    let spec = msg(|w| {
        w.varint(1, replicas);
        w.message(2, &selector);
        w.message(3, &template);
        w.message(4, &Writer::new());
        w.varint(5, 0);
        w.bool(7, false);
    });
    let status = msg(|w| {
        for n in [1, 2, 3, 4, 5, 7] {
            w.varint(n, 0);
        }
    });
    let deploy = msg(|w| {
        w.message(1, &object_meta("web", "", labels, None));
        w.message(2, &spec);
        w.message(3, &status);
    });
    body("apps/v1", "Deployment", &deploy)
}

#[test]
fn kubectl_create_deployment() {
    assert_eq!(
        decode(&deployment(2)).unwrap(),
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn a_pointer_to_zero_is_kept() {
    let out = decode(&deployment(0)).unwrap();
    assert_eq!(out["spec"]["replicas"], json!(0));
    // The zero minReadySeconds (a value field with omitempty) is not.
    assert!(out["spec"].get("minReadySeconds").is_none());
    assert!(out["metadata"].get("namespace").is_none());
}

#[test]
fn configmap_with_data_and_binary_data() {
    let cm = msg(|w| {
        w.message(1, &object_meta("cfg", "dev", &[], None));
        entries(w, 2, &[("a", b"1"), ("b", b"")]);
        entries(w, 3, &[("bin", &[0, 1, 2, 255])]);
    });
    assert_eq!(
        decode(&body("v1", "ConfigMap", &cm)).unwrap(),
        json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "cfg", "namespace": "dev", "creationTimestamp": null},
            "data": {"a": "1", "b": ""},
            "binaryData": {"bin": "AAEC/w=="}
        })
    );
}

#[test]
fn secret_data_is_base64() {
    let secret = msg(|w| {
        w.message(1, &object_meta("creds", "", &[], None));
        entries(w, 2, &[("password", b"s3cr3t!"), ("empty", b"")]);
        w.string(3, "Opaque");
    });
    assert_eq!(
        decode(&body("v1", "Secret", &secret)).unwrap(),
        json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "creds", "creationTimestamp": null},
            "data": {"password": "czNjcjN0IQ==", "empty": ""},
            "type": "Opaque"
        })
    );
}

#[test]
fn namespace_keeps_empty_structs() {
    let ns = msg(|w| {
        w.message(1, &object_meta("dev", "", &[], None));
        w.message(2, &Writer::new());
        w.message(3, &msg(|s| s.string(1, "")));
        // A field number upstream does not know is skipped.
        w.varint(999, 7);
    });
    assert_eq!(
        decode(&body("v1", "Namespace", &ns)).unwrap(),
        json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": "dev", "creationTimestamp": null},
            "spec": {},
            "status": {}
        })
    );
}

fn int_or_string_int(v: u64) -> Writer {
    msg(|w| {
        w.varint(1, 0);
        w.varint(2, v);
        w.string(3, "");
    })
}

fn int_or_string_str(v: &str) -> Writer {
    msg(|w| {
        w.varint(1, 1);
        w.varint(2, 0);
        w.string(3, v);
    })
}

fn service_port(name: &str, port: u64, target: Option<&Writer>) -> Writer {
    msg(|w| {
        w.string(1, name);
        w.string(2, "TCP");
        w.varint(3, port);
        if let Some(t) = target {
            w.message(4, t);
        }
        w.varint(5, 0);
    })
}

#[test]
fn service_target_port_int_or_string() {
    let spec = msg(|w| {
        w.message(
            1,
            &service_port("80-8080", 80, Some(&int_or_string_int(8080))),
        );
        w.message(
            1,
            &service_port("https", 443, Some(&int_or_string_str("https"))),
        );
        // Go marshals an unset IntOrString as 0: a struct is never omitted.
        w.message(1, &service_port("dns", 53, None));
        entries(w, 2, &[("app", b"web")]);
        w.string(3, "");
        w.string(4, "ClusterIP");
        w.string(7, "");
        w.varint(12, 0);
        w.bool(13, false);
    });
    let status = msg(|w| w.message(1, &Writer::new()));
    let svc = msg(|w| {
        w.message(1, &object_meta("web", "", &[("app", b"web")], None));
        w.message(2, &spec);
        w.message(3, &status);
    });
    assert_eq!(
        decode(&body("v1", "Service", &svc)).unwrap(),
        json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "ports": [
                    {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                    {"name": "dns", "protocol": "TCP", "port": 53, "targetPort": 0}
                ],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn kubectl_run_with_resource_limits() {
    let quantity = |s: &str| msg(|w| w.string(1, s));
    let limit = |w: &mut Writer, k: &str, q: &str| {
        let e = msg(|e| {
            e.string(1, k);
            e.message(2, &quantity(q));
        });
        w.message(1, &e);
    };
    let resources = msg(|w| {
        limit(w, "cpu", "500m");
        limit(w, "memory", "128Mi");
    });
    let security = msg(|w| {
        // supplementalGroups: one packed run, then one unpacked element.
        w.bytes(4, &[0xe8, 0x07, 0xd0, 0x0f]);
        w.int64(4, 3000);
    });
    let spec = msg(|w| {
        w.message(2, &container("nginx", "nginx", &resources));
        w.string(3, "Always");
        w.string(6, "ClusterFirst");
        w.message(14, &security);
    });
    let pod = msg(|w| {
        w.message(1, &object_meta("nginx", "", &[("run", b"nginx")], None));
        w.message(2, &spec);
        w.message(3, &Writer::new());
    });
    assert_eq!(
        decode(&body("v1", "Pod", &pod)).unwrap(),
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "nginx", "creationTimestamp": null, "labels": {"run": "nginx"}},
            "spec": {
                "containers": [{
                    "name": "nginx",
                    "image": "nginx",
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}
                }],
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst",
                "securityContext": {"supplementalGroups": [1000, 2000, 3000]}
            },
            "status": {}
        })
    );
}

#[test]
fn job_with_creation_timestamp() {
    let template = msg(|w| {
        w.message(1, &object_meta("", "", &[], None));
        w.message(
            2,
            &pod_spec(&[container("pi", "perl", &Writer::new())], "Never", ""),
        );
    });
    let spec = msg(|w| {
        w.message(6, &template);
        w.varint(7, 0);
    });
    let job = msg(|w| {
        w.message(1, &object_meta("pi", "default", &[], Some(1_714_564_800)));
        w.message(2, &spec);
        w.message(3, &Writer::new());
    });
    assert_eq!(
        decode(&body("batch/v1", "Job", &job)).unwrap(),
        json!({
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {
                "name": "pi",
                "namespace": "default",
                "creationTimestamp": "2024-05-01T12:00:00Z"
            },
            "spec": {
                "template": {
                    "metadata": {"creationTimestamp": null},
                    "spec": {
                        "containers": [{"name": "pi", "image": "perl", "resources": {}}],
                        "restartPolicy": "Never"
                    }
                },
                "backoffLimit": 0
            },
            "status": {}
        })
    );
}

#[test]
fn token_request_writes_nil_fields_without_omitempty_as_null() {
    // `kubectl create token default --duration=1h`
    let spec = msg(|w| w.int64(4, 3600));
    let status = msg(|w| {
        w.string(1, "");
        w.message(2, &time(None));
    });
    let tr = msg(|w| {
        w.message(1, &object_meta("", "", &[], None));
        w.message(2, &spec);
        w.message(3, &status);
    });
    assert_eq!(
        decode(&body("authentication.k8s.io/v1", "TokenRequest", &tr)).unwrap(),
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"audiences": null, "boundObjectRef": null, "expirationSeconds": 3600},
            "status": {"token": "", "expirationTimestamp": null}
        })
    );
}

#[test]
fn lease_micro_time_and_extra_value_maps() {
    let micro = msg(|w| {
        w.int64(1, 1_714_564_800);
        w.varint(2, 123_456_789);
    });
    let spec = msg(|w| {
        w.string(1, "node-a");
        w.message(4, &micro);
    });
    let lease = msg(|w| {
        w.message(1, &object_meta("node-a", "kube-node-lease", &[], None));
        w.message(2, &spec);
    });
    assert_eq!(
        decode(&body("coordination.k8s.io/v1", "Lease", &lease)).unwrap()["spec"],
        json!({"holderIdentity": "node-a", "renewTime": "2024-05-01T12:00:00.123456Z"})
    );

    // authentication/v1 ExtraValue is a Go `[]string`: the wrapper message
    // becomes a plain array, an empty one when the value carries no items.
    let extra = |w: &mut Writer, k: &str, items: &[&str]| {
        let value = msg(|v| {
            for i in items {
                v.string(1, i);
            }
        });
        let e = msg(|e| {
            e.string(1, k);
            e.message(2, &value);
        });
        w.message(4, &e);
    };
    let user = msg(|w| {
        w.string(1, "alice");
        extra(w, "scopes", &["a", "b"]);
        extra(w, "none", &[]);
    });
    let review = msg(|w| {
        w.message(1, &object_meta("", "", &[], None));
        w.message(
            3,
            &msg(|s| {
                s.bool(1, true);
                s.message(2, &user);
            }),
        );
    });
    assert_eq!(
        decode(&body("authentication.k8s.io/v1", "TokenReview", &review)).unwrap(),
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {},
            "status": {
                "authenticated": true,
                "user": {"username": "alice", "extra": {"scopes": ["a", "b"], "none": []}}
            }
        })
    );
}

#[test]
fn raw_extension_is_embedded_json() {
    let revision = |data: Option<&[u8]>| {
        let cr = msg(|w| {
            w.message(1, &object_meta("rev", "", &[], None));
            if let Some(d) = data {
                w.message(2, &msg(|r| r.bytes(1, d)));
            }
            w.int64(3, 4);
        });
        decode(&body("apps/v1", "ControllerRevision", &cr))
    };
    let out = revision(Some(br#"{"spec":{"x":[1,"two"]}}"#)).unwrap();
    assert_eq!(out["data"], json!({"spec": {"x": [1, "two"]}}));
    assert_eq!(out["revision"], json!(4));
    // A RawExtension field is a struct: `null`, not absent, when unset.
    assert_eq!(revision(None).unwrap().get("data"), Some(&Value::Null));
    assert!(matches!(
        revision(Some(b"\x01\x02")),
        Err(DecodeError::InvalidValue { path, .. }) if path == "data"
    ));
}

#[test]
fn envelope_errors() {
    assert_eq!(
        decode(b""),
        Err(DecodeError::NotProtobuf("missing the k8s\\0 prefix"))
    );
    assert!(matches!(
        decode(br#"{"kind":"Pod"}"#),
        Err(DecodeError::NotProtobuf(_))
    ));
    assert_eq!(
        decode(b"k8s\0"),
        Err(DecodeError::NotProtobuf("empty body"))
    );
    assert_eq!(
        decode(&body("v1", "NoSuchKind", &Writer::new())),
        Err(DecodeError::UnknownKind {
            api_version: "v1".into(),
            kind: "NoSuchKind".into()
        })
    );
    // Pod is a core kind, not an apps/v1 one.
    assert!(matches!(
        decode(&body("apps/v1", "Pod", &Writer::new())),
        Err(DecodeError::UnknownKind { .. })
    ));
    assert_eq!(
        decode(&body("v1", "", &Writer::new())),
        Err(DecodeError::MissingTypeMeta("kind"))
    );
    assert_eq!(
        decode(&body("", "Pod", &Writer::new())),
        Err(DecodeError::MissingTypeMeta("apiVersion"))
    );
    let mut truncated = body("v1", "Namespace", &msg(|w| w.string(1, "x")));
    truncated.pop();
    assert!(matches!(
        decode(&truncated),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn malformed_fields_name_their_path() {
    // A length prefix running past the end of ObjectMeta.
    let cm = msg(|w| w.bytes(1, &[0x0a, 0x09, b'x']));
    let err = decode(&body("v1", "ConfigMap", &cm)).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Malformed { path, .. } if path == "metadata"),
        "{err}"
    );

    // replicas sent as a string.
    let deploy = msg(|w| w.message(2, &msg(|s| s.string(1, "2"))));
    let err = decode(&body("apps/v1", "Deployment", &deploy)).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Malformed { path, .. } if path == "spec.replicas"),
        "{err}"
    );

    // Invalid UTF-8 in a container image and in a label value.
    let template = msg(|w| {
        w.message(1, &object_meta("", "", &[("app", b"\xff")], None));
        w.message(
            2,
            &pod_spec(
                &[
                    container("c", "\u{0}ok", &Writer::new()),
                    container("c", "ok", &Writer::new()),
                ],
                "",
                "",
            ),
        );
    });
    let deploy = msg(|w| w.message(2, &msg(|s| s.message(3, &template))));
    let err = decode(&body("apps/v1", "Deployment", &deploy)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            path: "spec.template.metadata.labels[app]".into()
        }
    );
    let bad_image = msg(|w| {
        w.string(1, "c");
        w.bytes(2, b"ngin\xc3x");
    });
    let template = msg(|w| {
        w.message(
            2,
            &pod_spec(&[container("ok", "ok", &Writer::new()), bad_image], "", ""),
        )
    });
    let deploy = msg(|w| w.message(2, &msg(|s| s.message(3, &template))));
    assert_eq!(
        decode(&body("apps/v1", "Deployment", &deploy)).unwrap_err(),
        DecodeError::InvalidUtf8 {
            path: "spec.template.spec.containers[1].image".into()
        }
    );

    // An IntOrString of neither type.
    let bad = msg(|w| w.varint(1, 2));
    let svc = msg(|w| {
        w.message(
            2,
            &msg(|s| s.message(1, &service_port("p", 80, Some(&bad)))),
        )
    });
    assert!(matches!(
        decode(&body("v1", "Service", &svc)),
        Err(DecodeError::InvalidValue { path, .. }) if path == "spec.ports[0].targetPort"
    ));
}

#[test]
fn nesting_is_bounded() {
    // JSONSchemaProps.not (28) nested far deeper than any real schema.
    let mut schema = Writer::new();
    for _ in 0..150 {
        schema = msg(|w| w.message(28, &schema));
    }
    let validation = msg(|w| w.message(1, &schema));
    let version = msg(|w| {
        w.string(1, "v1");
        w.message(4, &validation);
    });
    let crd = msg(|w| w.message(2, &msg(|s| s.message(7, &version))));
    let out = decode(&body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    ));
    assert_eq!(out, Err(DecodeError::TooDeep(decode::MAX_DEPTH)));

    // A shallow schema decodes, with JSON-valued fields and the Or-types.
    let leaf = msg(|w| {
        w.string(5, "integer");
        w.message(8, &msg(|j| j.bytes(1, b"3")));
        w.double(9, 10.0);
    });
    let props = msg(|w| {
        w.string(5, "object");
        let e = msg(|e| {
            e.string(1, "size");
            e.message(2, &leaf);
        });
        w.message(29, &e);
        w.message(30, &msg(|b| b.bool(1, false)));
        w.message(24, &msg(|a| a.message(1, &leaf)));
    });
    let version = msg(|w| {
        w.string(1, "v1");
        w.bool(2, true);
        w.bool(3, true);
        w.message(4, &msg(|v| v.message(1, &props)));
    });
    let crd = msg(|w| w.message(2, &msg(|s| s.message(7, &version))));
    let out = decode(&body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    ))
    .unwrap();
    assert_eq!(
        out["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        json!({
            "type": "object",
            "properties": {"size": {"type": "integer", "default": 3, "maximum": 10}},
            "additionalProperties": false,
            "items": {"type": "integer", "default": 3, "maximum": 10}
        })
    );
}

#[test]
fn truncated_bodies_never_panic() {
    let full = deployment(3);
    let mut errors = 0;
    for len in 0..full.len() {
        if decode(&full[..len]).is_err() {
            errors += 1;
        }
    }
    assert!(decode(&full).is_ok());
    assert!(errors > full.len() / 2, "{errors} of {}", full.len());
}

#[test]
fn table_is_consistent() {
    assert!(MSGS.len() > 1000, "{}", MSGS.len());
    assert!(MSGS.windows(2).all(|w| w[0].name < w[1].name));
    for m in MSGS {
        assert!(
            m.fields.windows(2).all(|w| w[0].num < w[1].num),
            "{}",
            m.name
        );
        for f in m.fields {
            if let Ty::M(i) = f.ty {
                assert!(usize::from(i) < MSGS.len(), "{}.{}", m.name, f.json);
            }
            assert_eq!(f.card == Card::Inline, f.json.is_empty(), "{}", m.name);
        }
    }
    assert!(KINDS
        .windows(2)
        .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    let shape = |name: &str| MSGS.iter().find(|m| m.name == name).map(|m| m.shape);
    assert_eq!(shape("meta/v1.Time"), Some(Shape::Time));
    assert_eq!(shape("api/resource.Quantity"), Some(Shape::Quantity));
    assert_eq!(shape("meta/v1.Verbs"), Some(Shape::Items));
    for (api_version, kind) in [
        ("v1", "Pod"),
        ("v1", "ServiceAccount"),
        ("v1", "ResourceQuota"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("policy/v1", "PodDisruptionBudget"),
        ("policy/v1", "Eviction"),
        ("networking.k8s.io/v1", "Ingress"),
        ("autoscaling/v1", "Scale"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apps/v1", "DeleteOptions"),
    ] {
        assert!(
            schema::kind(api_version, kind).is_some(),
            "{api_version} {kind}"
        );
    }
}
