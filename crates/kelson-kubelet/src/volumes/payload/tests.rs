use super::*;
use crate::env::EnvError;
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIProjection, ObjectFieldSelector, PodSpec,
    ResourceFieldSelector, SecretProjection, ServiceAccountTokenProjection, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

struct Fake;

impl VolumeSources for Fake {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        Ok((ns == "ns" && name == "cfg").then(|| ConfigMap {
            data: Some(BTreeMap::from([
                ("app.conf".to_string(), "x=1".to_string()),
                ("other".to_string(), "o".to_string()),
            ])),
            binary_data: Some(BTreeMap::from([(
                "blob".to_string(),
                ByteString(vec![0, 1, 2]),
            )])),
            ..Default::default()
        }))
    }
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        if name == "broken" {
            return Err("forbidden".into());
        }
        Ok((ns == "ns" && name == "tls").then(|| Secret {
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(b"CERT".to_vec())),
                ("tls.key".to_string(), ByteString(b"KEY".to_vec())),
            ])),
            ..Default::default()
        }))
    }
}

fn pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("u-1".into()),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("builder".into()),
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ktp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
    KeyToPath {
        key: key.into(),
        path: path.into(),
        mode,
    }
}

fn summary(p: &Payload) -> Vec<(String, String, u32)> {
    p.iter()
        .map(|(k, f)| {
            (
                k.clone(),
                String::from_utf8_lossy(&f.data).into_owned(),
                f.mode,
            )
        })
        .collect()
}

#[test]
fn config_map_volume() {
    let src = ConfigMapVolumeSource {
        name: "cfg".into(),
        default_mode: Some(0o640),
        ..Default::default()
    };
    let all = config_map_volume_payload(&pod(), &src, &Fake).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["blob"].data, vec![0, 1, 2]);
    assert_eq!(all["app.conf"].mode, 0o640);

    let items = ConfigMapVolumeSource {
        items: Some(vec![
            ktp("app.conf", "etc/app.conf", Some(0o400)),
            ktp("other", "o", None),
        ]),
        ..src.clone()
    };
    assert_eq!(
        summary(&config_map_volume_payload(&pod(), &items, &Fake).unwrap()),
        vec![
            ("etc/app.conf".into(), "x=1".into(), 0o400),
            ("o".into(), "o".into(), 0o640)
        ]
    );

    let missing_key = ConfigMapVolumeSource {
        items: Some(vec![ktp("nope", "n", None)]),
        ..src.clone()
    };
    assert_eq!(
        config_map_volume_payload(&pod(), &missing_key, &Fake)
            .unwrap_err()
            .to_string(),
        "configmap references non-existent config key: nope"
    );
    let optional_key = ConfigMapVolumeSource {
        optional: Some(true),
        ..missing_key
    };
    assert!(config_map_volume_payload(&pod(), &optional_key, &Fake)
        .unwrap()
        .is_empty());

    let missing = ConfigMapVolumeSource {
        name: "gone".into(),
        ..Default::default()
    };
    assert_eq!(
        config_map_volume_payload(&pod(), &missing, &Fake)
            .unwrap_err()
            .to_string(),
        "configmap \"gone\" not found"
    );
    let optional = ConfigMapVolumeSource {
        optional: Some(true),
        items: Some(vec![ktp("k", "k", None)]),
        ..missing
    };
    assert!(config_map_volume_payload(&pod(), &optional, &Fake)
        .unwrap()
        .is_empty());
}

#[test]
fn secret_volume() {
    let src = SecretVolumeSource {
        secret_name: Some("tls".into()),
        ..Default::default()
    };
    assert_eq!(
        summary(&secret_volume_payload(&pod(), &src, &Fake).unwrap()),
        vec![
            ("tls.crt".into(), "CERT".into(), 0o644),
            ("tls.key".into(), "KEY".into(), 0o644)
        ]
    );
    let bad = SecretVolumeSource {
        items: Some(vec![ktp("ca.crt", "ca", None)]),
        ..src
    };
    assert_eq!(
        secret_volume_payload(&pod(), &bad, &Fake)
            .unwrap_err()
            .to_string(),
        "references non-existent secret key: ca.crt"
    );
    let gone = SecretVolumeSource {
        secret_name: Some("gone".into()),
        ..Default::default()
    };
    assert_eq!(
        secret_volume_payload(&pod(), &gone, &Fake)
            .unwrap_err()
            .to_string(),
        "secret \"gone\" not found"
    );
}

fn field_item(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            api_version: Some("v1".into()),
            field_path: field.into(),
        }),
        ..Default::default()
    }
}

#[test]
fn downward_api_volume() {
    let src = DownwardAPIVolumeSource {
        default_mode: Some(0o600),
        items: Some(vec![
            field_item("./labels", "metadata.labels"),
            field_item("name", "metadata.name"),
            DownwardAPIVolumeFile {
                path: "cpu_limit".into(),
                mode: Some(0o444),
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some("app".into()),
                    resource: "limits.cpu".into(),
                    divisor: None,
                }),
                ..Default::default()
            },
        ]),
    };
    let alloc = NodeAllocatable {
        cpu: kelson_apimachinery::quantity::Quantity::parse("3").ok(),
        ..Default::default()
    };
    assert_eq!(
        summary(&downward_api_volume_payload(&pod(), &src, &alloc).unwrap()),
        vec![
            ("cpu_limit".into(), "3".into(), 0o444),
            ("labels".into(), "app=\"web\"".into(), 0o600),
            ("name".into(), "web".into(), 0o600),
        ]
    );
    let bad = DownwardAPIVolumeSource {
        default_mode: None,
        items: Some(vec![
            field_item("a", "spec.nodeName"),
            field_item("b", "status.podIP"),
        ]),
    };
    let err = downward_api_volume_payload(&pod(), &bad, &alloc).unwrap_err();
    assert_eq!(
        err.to_string(),
        "[unsupported fieldPath: spec.nodeName, unsupported fieldPath: status.podIP]"
    );
    let one = DownwardAPIVolumeSource {
        default_mode: None,
        items: Some(vec![field_item("a", "spec.nodeName")]),
    };
    assert!(matches!(
        downward_api_volume_payload(&pod(), &one, &alloc).unwrap_err(),
        VolumeError::Field(EnvError::UnsupportedFieldPath(_))
    ));
}

#[test]
fn projected_volume() {
    let src = ProjectedVolumeSource {
        default_mode: Some(0o644),
        sources: Some(vec![
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "cfg".into(),
                    items: Some(vec![ktp("app.conf", "conf", None)]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                secret: Some(SecretProjection {
                    name: "tls".into(),
                    items: Some(vec![ktp("tls.crt", "conf", Some(0o400))]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![field_item("ns", "metadata.namespace")]),
                }),
                ..Default::default()
            },
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some("vault".into()),
                    expiration_seconds: Some(600),
                    path: "token".into(),
                }),
                ..Default::default()
            },
        ]),
    };
    let seen = std::cell::RefCell::new(None);
    let token = |r: &TokenRequest| -> Result<String, String> {
        *seen.borrow_mut() = Some(r.clone());
        Ok("jwt".into())
    };
    let alloc = NodeAllocatable::default();
    let out = projected_volume_payload(&pod(), &src, &Fake, &alloc, &token, None, None).unwrap();
    assert_eq!(
        summary(&out),
        vec![
            // The later secret source replaces the configMap's file.
            ("conf".into(), "CERT".into(), 0o400),
            ("ns".into(), "ns".into(), 0o644),
            ("token".into(), "jwt".into(), 0o644),
        ]
    );
    assert_eq!(
        seen.borrow().clone().unwrap(),
        TokenRequest {
            namespace: "ns".into(),
            service_account_name: "builder".into(),
            audiences: vec!["vault".into()],
            expiration_seconds: Some(600),
            pod_name: "web".into(),
            pod_uid: "u-1".into(),
        }
    );
    // With an fsUser the token is 0600 and owned by it.
    let out =
        projected_volume_payload(&pod(), &src, &Fake, &alloc, &token, Some(1000), None).unwrap();
    assert_eq!(
        (out["token"].mode, out["token"].fs_user),
        (0o600, Some(1000))
    );

    // Failures of several sources are reported together.
    let bad = ProjectedVolumeSource {
        default_mode: None,
        sources: Some(vec![
            VolumeProjection {
                secret: Some(SecretProjection {
                    name: "broken".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "gone".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "gone2".into(),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
    };
    let fail = |_: &TokenRequest| -> Result<String, String> { Err("token denied".into()) };
    assert_eq!(
        projected_volume_payload(&pod(), &bad, &Fake, &alloc, &fail, None, None)
            .unwrap_err()
            .to_string(),
        "[forbidden, configmap \"gone\" not found, token denied]"
    );
}
