//! The API objects a pod reads, fetched before each sync: the ConfigMaps
//! and Secrets its containers' `env` / `envFrom`, its volumes and its
//! `imagePullSecrets` name, and the Services behind the service link
//! variables. Upstream's kubelet reads them through its ConfigMap / Secret
//! managers and Service lister; fetching them once per sync gives each
//! sync one consistent view.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, ListParams};

use crate::env::EnvSources;
use crate::volumes::VolumeSources;

/// A lookup's result: `Ok(None)` is "not found", `Err` any other failure
/// (its message, passed on to the pod's events and statuses).
type Lookup<T> = Result<Option<T>, String>;

/// The objects one pod references, as fetched for one sync.
#[derive(Debug, Clone, Default)]
pub struct PodSources {
    namespace: String,
    config_maps: BTreeMap<String, Lookup<ConfigMap>>,
    secrets: BTreeMap<String, Lookup<Secret>>,
    /// `imagePullSecrets` names, in the pod's order.
    pull_secret_names: Vec<String>,
    services: Vec<Service>,
    services_error: Option<String>,
    /// Built from objects at hand: a name not among them is not found
    /// (rather than "not fetched").
    unknown_is_missing: bool,
}

/// The names of the ConfigMaps and Secrets a pod references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

fn container_refs(c: &Container, out: &mut References) {
    for e in c.env.iter().flatten() {
        let Some(vf) = &e.value_from else { continue };
        if let Some(r) = &vf.config_map_key_ref {
            out.config_maps.insert(r.name.clone());
        }
        if let Some(r) = &vf.secret_key_ref {
            out.secrets.insert(r.name.clone());
        }
    }
    for ef in c.env_from.iter().flatten() {
        if let Some(r) = &ef.config_map_ref {
            out.config_maps.insert(r.name.clone());
        }
        if let Some(r) = &ef.secret_ref {
            out.secrets.insert(r.name.clone());
        }
    }
}

/// Every ConfigMap and Secret the pod names in container env / envFrom
/// (init, app and ephemeral containers), volumes (configMap, secret,
/// projected) and imagePullSecrets.
pub fn references(pod: &Pod) -> References {
    let mut out = References::default();
    let Some(spec) = &pod.spec else { return out };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        container_refs(c, &mut out);
    }
    for ec in spec.ephemeral_containers.iter().flatten() {
        // Ephemeral containers carry the same env fields.
        let c = Container {
            env: ec.env.clone(),
            env_from: ec.env_from.clone(),
            ..Default::default()
        };
        container_refs(&c, &mut out);
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            out.config_maps.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.secrets.insert(s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                out.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &p.secret {
                out.secrets.insert(s.name.clone());
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        out.secrets.insert(s.name.clone());
    }
    out.config_maps.remove("");
    out.secrets.remove("");
    out
}

async fn get<K>(api: &Api<K>, name: &str) -> Lookup<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|e| e.to_string())
}

/// Fetches everything `pod` reads. Lookups never fail the call: each
/// object's outcome is kept for the code that needs it.
pub async fn prefetch(client: &kube::Client, pod: &Pod) -> PodSources {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let refs = references(pod);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let cms = futures::future::join_all(refs.config_maps.iter().map(|n| get(&cm_api, n))).await;
    let secrets = futures::future::join_all(refs.secrets.iter().map(|n| get(&secret_api, n))).await;

    // Upstream's getServiceEnvVarMap: the namespace's Services only with
    // service links on, `default/kubernetes` always.
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services = Vec::new();
    let mut services_error = None;
    if links {
        let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
        match svc_api.list(&ListParams::default()).await {
            Ok(list) => services.extend(list.items),
            Err(e) => services_error = Some(e.to_string()),
        }
    }
    if !(links && ns == "default") {
        let default_api: Api<Service> = Api::namespaced(client.clone(), "default");
        match default_api.get_opt("kubernetes").await {
            Ok(Some(svc)) => services.push(svc),
            Ok(None) => {}
            Err(e) => services_error = Some(e.to_string()),
        }
    }
    // Objects listed from a namespace come without it when the server
    // leaves it implied; env::service_env matches on it.
    for s in &mut services {
        if s.metadata.namespace.is_none() {
            s.metadata.namespace = Some(ns.clone());
        }
    }

    let pull_secret_names = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    PodSources {
        namespace: ns,
        config_maps: refs.config_maps.into_iter().zip(cms).collect(),
        secrets: refs.secrets.into_iter().zip(secrets).collect(),
        pull_secret_names,
        services,
        services_error,
        unknown_is_missing: false,
    }
}

impl PodSources {
    /// Sources from objects already at hand (tests, static pods): every
    /// other name reads as not found.
    pub fn from_objects(
        namespace: &str,
        config_maps: Vec<ConfigMap>,
        secrets: Vec<Secret>,
        services: Vec<Service>,
        pull_secret_names: Vec<String>,
    ) -> PodSources {
        let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.name.clone().unwrap_or_default()
        };
        PodSources {
            namespace: namespace.to_string(),
            config_maps: config_maps
                .into_iter()
                .map(|c| (name(&c.metadata), Ok(Some(c))))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| (name(&s.metadata), Ok(Some(s))))
                .collect(),
            pull_secret_names,
            services,
            services_error: None,
            unknown_is_missing: true,
        }
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The `imagePullSecrets` that exist, in the pod's order; missing ones
    /// are skipped, as upstream (it only logs them).
    pub fn pull_secrets(&self) -> Vec<Secret> {
        self.pull_secret_names
            .iter()
            .filter_map(|n| match self.secrets.get(n) {
                Some(Ok(Some(s))) => Some(s.clone()),
                _ => {
                    tracing::warn!(secret = %n, namespace = %self.namespace,
                        "unable to retrieve pull secret, the image pull may not succeed");
                    None
                }
            })
            .collect()
    }

    /// The Services for [`crate::env::service_env`]: the namespace's (when
    /// service links are on) and `default/kubernetes`.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Why the Services could not be listed, if they could not (upstream
    /// then fails the container's environment).
    pub fn services_error(&self) -> Option<&str> {
        self.services_error.as_deref()
    }

    fn lookup<'a, T>(
        &self,
        map: &'a BTreeMap<String, Lookup<T>>,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<&'a T>, String> {
        let own_ns = &self.namespace;
        if ns != own_ns {
            return Err(format!(
                "{kind} {ns}/{name} is outside the pod's namespace {own_ns}"
            ));
        }
        match map.get(name) {
            Some(Ok(v)) => Ok(v.as_ref()),
            Some(Err(e)) => Err(e.clone()),
            None if self.unknown_is_missing => Ok(None),
            None => Err(format!("{kind} {ns}/{name} was not fetched for this pod")),
        }
    }

    fn config_map_obj(&self, ns: &str, name: &str) -> Result<Option<&ConfigMap>, String> {
        self.lookup(&self.config_maps, ns, "configmap", name)
    }

    fn secret_obj(&self, ns: &str, name: &str) -> Result<Option<&Secret>, String> {
        self.lookup(&self.secrets, ns, "secret", name)
    }
}

impl EnvSources for PodSources {
    /// `data` only: upstream's env code ignores `binaryData`.
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(self
            .config_map_obj(ns, name)?
            .map(|cm| cm.data.clone().unwrap_or_default()))
    }

    fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(self.secret_obj(ns, name)?.map(|s| {
            s.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect()
        }))
    }
}

impl VolumeSources for PodSources {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        Ok(self.config_map_obj(ns, name)?.cloned())
    }

    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        Ok(self.secret_obj(ns, name)?.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
        EnvFromSource, EnvVar, EnvVarSource, EphemeralContainer, LocalObjectReference, PodSpec,
        ProjectedVolumeSource, SecretEnvSource, SecretKeySelector, SecretProjection,
        SecretVolumeSource, Volume, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_every_reference() {
        let env_cm = |n: &str| EnvVar {
            name: "A".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: n.into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![Container {
                    env: Some(vec![env_cm("init-cm")]),
                    ..Default::default()
                }]),
                containers: vec![Container {
                    env: Some(vec![EnvVar {
                        name: "S".into(),
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: "env-secret".into(),
                                key: "k".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    env_from: Some(vec![
                        EnvFromSource {
                            config_map_ref: Some(ConfigMapEnvSource {
                                name: "from-cm".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                        EnvFromSource {
                            secret_ref: Some(SecretEnvSource {
                                name: "from-secret".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ephemeral_containers: Some(vec![EphemeralContainer {
                    env: Some(vec![env_cm("debug-cm")]),
                    ..Default::default()
                }]),
                volumes: Some(vec![
                    Volume {
                        name: "a".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: "vol-cm".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "b".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("vol-secret".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "c".into(),
                        projected: Some(ProjectedVolumeSource {
                            sources: Some(vec![
                                VolumeProjection {
                                    config_map: Some(ConfigMapProjection {
                                        name: "kube-root-ca.crt".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                                VolumeProjection {
                                    secret: Some(SecretProjection {
                                        name: "proj-secret".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                image_pull_secrets: Some(vec![LocalObjectReference {
                    name: "regcred".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = references(&pod);
        assert_eq!(
            r.config_maps,
            set(&[
                "debug-cm",
                "from-cm",
                "init-cm",
                "kube-root-ca.crt",
                "vol-cm"
            ])
        );
        assert_eq!(
            r.secrets,
            set(&[
                "env-secret",
                "from-secret",
                "proj-secret",
                "regcred",
                "vol-secret"
            ])
        );
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        }
    }

    #[test]
    fn lookups_answer_from_what_was_fetched() {
        let mut src = PodSources::from_objects(
            "ns",
            vec![ConfigMap {
                metadata: meta("cfg"),
                data: Some(BTreeMap::from([("a".to_string(), "1".to_string())])),
                binary_data: Some(BTreeMap::from([("b".to_string(), ByteString(vec![1]))])),
                ..Default::default()
            }],
            vec![Secret {
                metadata: meta("regcred"),
                data: Some(BTreeMap::from([(
                    ".dockerconfigjson".to_string(),
                    ByteString(b"{}".to_vec()),
                )])),
                ..Default::default()
            }],
            vec![],
            vec!["regcred".into(), "missing".into()],
        );
        src.config_maps.insert("gone".into(), Ok(None));
        src.secrets.insert("denied".into(), Err("forbidden".into()));

        let env = EnvSources::config_map(&src, "ns", "cfg").unwrap().unwrap();
        assert_eq!(env, BTreeMap::from([("a".to_string(), "1".to_string())]));
        let vol = VolumeSources::config_map(&src, "ns", "cfg")
            .unwrap()
            .unwrap();
        assert!(vol.binary_data.is_some());
        assert_eq!(EnvSources::config_map(&src, "ns", "gone"), Ok(None));
        assert_eq!(
            VolumeSources::secret(&src, "ns", "denied").unwrap_err(),
            "forbidden"
        );
        assert!(EnvSources::config_map(&src, "other", "cfg").is_err());
        assert_eq!(
            EnvSources::config_map(&src, "ns", "never-fetched"),
            Ok(None)
        );
        src.unknown_is_missing = false;
        assert!(EnvSources::config_map(&src, "ns", "never-fetched").is_err());
        let pulls = src.pull_secrets();
        assert_eq!(pulls.len(), 1);
        assert_eq!(pulls[0].metadata.name.as_deref(), Some("regcred"));
        let secret = EnvSources::secret(&src, "ns", "regcred").unwrap().unwrap();
        assert_eq!(secret[".dockerconfigjson"], b"{}".to_vec());
    }
}
