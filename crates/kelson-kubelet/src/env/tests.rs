use super::*;
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
    SecretEnvSource, SecretKeySelector, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

struct Fake {
    cms: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl EnvSources for Fake {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        if name == "broken" {
            return Err("connection refused".into());
        }
        Ok(self.cms.get(&format!("{ns}/{name}")).cloned())
    }
    fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(self.secrets.get(&format!("{ns}/{name}")).cloned())
    }
}

fn fake() -> Fake {
    Fake {
        cms: BTreeMap::from([(
            "ns/cfg".to_string(),
            BTreeMap::from([
                ("HOST".to_string(), "db".to_string()),
                ("PORT".to_string(), "5432".to_string()),
            ]),
        )]),
        secrets: BTreeMap::from([(
            "ns/creds".to_string(),
            BTreeMap::from([("password".to_string(), b"s3cret".to_vec())]),
        )]),
    }
}

fn pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        ..Default::default()
    }
}

fn val(name: &str, v: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(v.into()),
        value_from: None,
    }
}

fn from(name: &str, src: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(src),
    }
}

fn cm_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
    EnvVarSource {
        config_map_key_ref: Some(ConfigMapKeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        }),
        ..Default::default()
    }
}

fn secret_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
    EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        }),
        ..Default::default()
    }
}

fn run(c: &Container, svc: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, EnvError> {
    container_env(
        &pod(),
        c,
        svc,
        "10.0.0.1",
        &[],
        &fake(),
        &NodeAllocatable::default(),
    )
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn order_override_and_expansion() {
    let svc = BTreeMap::from([
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "10.96.0.1".to_string(),
        ),
        ("HOST".to_string(), "from-service".to_string()),
    ]);
    let c = Container {
        name: "c".into(),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "cfg".into(),
                optional: None,
            }),
            prefix: Some("DB_".into()),
            secret_ref: None,
        }]),
        env: Some(vec![
            val(
                "URL",
                "$(DB_HOST):$(DB_PORT)/$(LATER)@$(KUBERNETES_SERVICE_HOST)",
            ),
            val("LATER", "x"),
            val("DB_PORT", "6543"),
            val("ESC", "$$(URL)"),
            from("PASS", secret_key("creds", "password", None)),
            val("HOST", "mine"),
        ]),
        ..Default::default()
    };
    let env = run(&c, &svc).unwrap();
    assert_eq!(
        env,
        pairs(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("DB_HOST", "db"),
            ("DB_PORT", "6543"),
            // LATER is not defined yet when URL is expanded.
            ("URL", "db:5432/$(LATER)@10.96.0.1"),
            ("LATER", "x"),
            ("ESC", "$(URL)"),
            ("PASS", "s3cret"),
            // An env var replaces a service variable of the same name.
            ("HOST", "mine"),
        ])
    );
}

#[test]
fn missing_sources_and_keys() {
    let one = |e: EnvVar| Container {
        name: "c".into(),
        env: Some(vec![e]),
        ..Default::default()
    };
    let none = BTreeMap::new();
    let err = |e: EnvVar| run(&one(e), &none).unwrap_err().to_string();
    assert_eq!(
        err(from("A", cm_key("nope", "k", None))),
        "configmap \"nope\" not found"
    );
    assert_eq!(
        err(from("A", cm_key("cfg", "k", None))),
        "couldn't find key k in ConfigMap ns/cfg"
    );
    assert_eq!(
        err(from("A", secret_key("nope", "k", Some(false)))),
        "secret \"nope\" not found"
    );
    assert_eq!(
        err(from("A", secret_key("creds", "user", None))),
        "couldn't find key user in Secret ns/creds"
    );
    assert_eq!(
        err(from("A", cm_key("broken", "k", Some(true)))),
        "connection refused"
    );
    // Optional: the variable is simply left out.
    assert!(run(&one(from("A", cm_key("nope", "k", Some(true)))), &none)
        .unwrap()
        .is_empty());
    assert!(run(&one(from("A", cm_key("cfg", "k", Some(true)))), &none)
        .unwrap()
        .is_empty());
    assert!(
        run(&one(from("A", secret_key("creds", "u", Some(true)))), &none)
            .unwrap()
            .is_empty()
    );

    let env_from = |cm: Option<bool>| Container {
        name: "c".into(),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "nope".into(),
                optional: cm,
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert_eq!(
        run(&env_from(None), &none).unwrap_err().to_string(),
        "secret \"nope\" not found"
    );
    assert!(run(&env_from(Some(true)), &none).unwrap().is_empty());
}

#[test]
fn env_from_secret_and_invalid_keys_are_reported() {
    let mut f = fake();
    f.cms.insert(
        "ns/odd".into(),
        BTreeMap::from([
            ("ok.key-1".to_string(), "v".to_string()),
            ("a".to_string(), "b".to_string()),
        ]),
    );
    let c = Container {
        name: "c".into(),
        env_from: Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "odd".into(),
                    optional: None,
                }),
                // A prefix with '=' cannot pass API validation; it shows the
                // skip-and-report path.
                prefix: Some("X=".into()),
                secret_ref: None,
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "creds".into(),
                    optional: None,
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let out = container_env_with_warnings(
        &pod(),
        &c,
        &BTreeMap::new(),
        "10.0.0.1",
        &[],
        &f,
        &NodeAllocatable::default(),
    )
    .unwrap();
    assert_eq!(out.vars, pairs(&[("password", "s3cret")]));
    assert_eq!(
        out.warnings,
        vec!["Keys [X=a, X=ok.key-1] from the EnvFrom configMap ns/odd were skipped since they are considered invalid environment variable names."]
    );
}

#[test]
fn field_and_resource_refs_in_env() {
    let c = Container {
        name: "c".into(),
        env: Some(vec![
            from(
                "NODE_IP",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: "status.hostIP".into(),
                    }),
                    ..Default::default()
                },
            ),
            from(
                "MEM",
                EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        resource: "limits.memory".into(),
                        divisor: None,
                        container_name: None,
                    }),
                    ..Default::default()
                },
            ),
            val("BOTH", "$(NODE_IP)/$(MEM)"),
        ]),
        ..Default::default()
    };
    let alloc = NodeAllocatable {
        memory: Quantity::parse("1Ki").ok(),
        ..Default::default()
    };
    let env = container_env(
        &pod(),
        &c,
        &BTreeMap::new(),
        "10.0.0.1",
        &[],
        &fake(),
        &alloc,
    )
    .unwrap();
    assert_eq!(
        env,
        pairs(&[
            ("NODE_IP", "10.0.0.1"),
            ("MEM", "1024"),
            ("BOTH", "10.0.0.1/1024")
        ])
    );
}

fn service(ns: &str, name: &str, ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(name: Option<&str>, p: i32, proto: Option<&str>) -> ServicePort {
    ServicePort {
        name: name.map(str::to_string),
        port: p,
        protocol: proto.map(str::to_string),
        ..Default::default()
    }
}

#[test]
fn service_env_vars_match_upstream() {
    let services = vec![
        service(
            "default",
            "kubernetes",
            "10.96.0.1",
            vec![port(Some("https"), 443, Some("TCP"))],
        ),
        service(
            "ns",
            "my-db",
            "10.96.0.7",
            vec![
                port(None, 5432, None),
                port(Some("metrics"), 9187, Some("UDP")),
            ],
        ),
        service("ns", "headless", "None", vec![port(None, 80, None)]),
        service(
            "other",
            "elsewhere",
            "10.96.0.9",
            vec![port(None, 80, None)],
        ),
    ];
    let env = service_env(&services, "ns", true);
    let expect = pairs(&[
        ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("MY_DB_PORT", "tcp://10.96.0.7:5432"),
        ("MY_DB_PORT_5432_TCP", "tcp://10.96.0.7:5432"),
        ("MY_DB_PORT_5432_TCP_ADDR", "10.96.0.7"),
        ("MY_DB_PORT_5432_TCP_PORT", "5432"),
        ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
        ("MY_DB_PORT_9187_UDP", "udp://10.96.0.7:9187"),
        ("MY_DB_PORT_9187_UDP_ADDR", "10.96.0.7"),
        ("MY_DB_PORT_9187_UDP_PORT", "9187"),
        ("MY_DB_PORT_9187_UDP_PROTO", "udp"),
        ("MY_DB_SERVICE_HOST", "10.96.0.7"),
        ("MY_DB_SERVICE_PORT", "5432"),
        ("MY_DB_SERVICE_PORT_METRICS", "9187"),
    ]);
    assert_eq!(env.into_iter().collect::<Vec<_>>(), expect);
    // Without service links only the master service remains.
    let env = service_env(&services, "ns", false);
    assert!(env.keys().all(|k| k.starts_with("KUBERNETES_")));
    assert_eq!(env.len(), 8);
    // IPv6 cluster IPs are bracketed in URLs.
    let v6 = vec![service(
        "default",
        "kubernetes",
        "fd00::1",
        vec![port(None, 443, None)],
    )];
    assert_eq!(
        service_env(&v6, "x", false)["KUBERNETES_PORT"],
        "tcp://[fd00::1]:443"
    );
}
