//! A pod's volumes on the host, set up before its containers start and
//! refreshed at every sync (upstream's volume manager, reduced to the
//! volume kinds Kelson supports: emptyDir, hostPath, configMap, secret,
//! downwardAPI and projected).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource, Volume};
use kelson_apimachinery::quantity::Quantity;

use crate::env::NodeAllocatable;
use crate::sources::PodSources;
use crate::volumes::{
    self, check_host_path_type, config_map_volume_payload, downward_api_volume_payload,
    empty_dir_memory_size, pod_dir, projected_volume_payload, secret_volume_payload,
    set_volume_ownership, setup_empty_dir, setup_projection_volume, teardown_empty_dir, Medium,
    Mounter, Payload, TokenRequest, VolumeError,
};

/// One volume as containers bind mount it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub host_path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are always
    /// read-only to containers.
    pub read_only: bool,
}

/// The pod's volumes by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    pub volumes: BTreeMap<String, MountedVolume>,
}

/// A service account token for a projected volume; `Err` fails the volume.
pub type TokenFn<'a> = &'a dyn Fn(&TokenRequest) -> Result<String, String>;

/// Sets up every volume of `pod` under `root` (see
/// [`setup_pod_volumes_with_tokens`]); projected serviceAccountToken
/// sources are left out (with a warning) as the API server has no
/// TokenRequest yet.
pub fn setup_pod_volumes(
    root: &Path,
    pod: &Pod,
    sources: &PodSources,
    node: &NodeAllocatable,
    mounter: &dyn Mounter,
) -> Result<PodVolumes, VolumeError> {
    setup_pod_volumes_with_tokens(root, pod, sources, node, mounter, None)
}

/// Sets up every volume of `pod`: idempotent, and configMap / secret /
/// downwardAPI / projected contents are rewritten (atomically) when they
/// changed. Every failing volume is reported, each as upstream's
/// `MountVolume.SetUp failed for volume "NAME" : REASON`.
/// `tokens` serves projected serviceAccountToken sources; without it they
/// are skipped.
pub fn setup_pod_volumes_with_tokens(
    root: &Path,
    pod: &Pod,
    sources: &PodSources,
    node: &NodeAllocatable,
    mounter: &dyn Mounter,
    tokens: Option<TokenFn<'_>>,
) -> Result<PodVolumes, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    if uid.is_empty() {
        return Err(VolumeError::Source("pod has no uid".into()));
    }
    let mut out = PodVolumes::default();
    let mut errs = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        match setup_volume(root, uid, pod, v, sources, node, mounter, tokens) {
            Ok(m) => {
                out.volumes.insert(v.name.clone(), m);
            }
            Err(e) => errs.push(VolumeError::Source(format!(
                "MountVolume.SetUp failed for volume {} : {e}",
                kelson_apimachinery::labels::go_quote(&v.name)
            ))),
        }
    }
    VolumeError::collect(errs)?;
    Ok(out)
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

fn quantity(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<Quantity> {
    q.and_then(|q| Quantity::parse(&q.0).ok())
}

/// Drops serviceAccountToken sources when no token function is given.
fn without_tokens(pod: &Pod, source: &ProjectedVolumeSource, name: &str) -> ProjectedVolumeSource {
    let mut s = source.clone();
    if let Some(list) = &mut s.sources {
        let before = list.len();
        list.retain(|p| p.service_account_token.is_none());
        if list.len() != before {
            tracing::warn!(
                pod = ?pod.metadata.name,
                volume = name,
                "skipping serviceAccountToken projection: TokenRequest is not served yet"
            );
        }
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn setup_volume(
    root: &Path,
    uid: &str,
    pod: &Pod,
    v: &Volume,
    sources: &PodSources,
    node: &NodeAllocatable,
    mounter: &dyn Mounter,
    tokens: Option<TokenFn<'_>>,
) -> Result<MountedVolume, VolumeError> {
    if let Some(hp) = &v.host_path {
        let path = PathBuf::from(&hp.path);
        check_host_path_type(&path, hp.type_.as_deref())?;
        return Ok(MountedVolume {
            host_path: path,
            read_only: false,
        });
    }
    let Some(dir) = volumes::volume_host_path(root, uid, v) else {
        return Err(VolumeError::Source(format!(
            "no volume plugin matched volume {}",
            kelson_apimachinery::labels::go_quote(&v.name)
        )));
    };
    let fs_group = fs_group(pod);
    // Upstream backs secret, downwardAPI and projected volumes by memory,
    // sized like a memory emptyDir without sizeLimit; configMaps by disk.
    let memory_size = || empty_dir_memory_size(node.memory.as_ref(), pod, None);
    let projection = |medium: Medium, payload: Payload| -> Result<MountedVolume, VolumeError> {
        let size = match medium {
            Medium::Memory => memory_size()?,
            Medium::Default => None,
        };
        setup_projection_volume(&dir, medium, size, &payload, mounter, fs_group)?;
        Ok(MountedVolume {
            host_path: dir.clone(),
            read_only: true,
        })
    };

    if let Some(ed) = &v.empty_dir {
        let medium = Medium::parse(ed.medium.as_deref())?;
        let size = match medium {
            Medium::Memory => {
                let limit = quantity(ed.size_limit.as_ref());
                empty_dir_memory_size(node.memory.as_ref(), pod, limit.as_ref())?
            }
            Medium::Default => None,
        };
        let fresh = fs::symlink_metadata(&dir).is_err();
        setup_empty_dir(&dir, medium, size, mounter)?;
        // Ownership is applied once, when the volume is made: walking a
        // full scratch volume at every sync would be costly.
        if let (true, Some(g)) = (fresh, fs_group) {
            set_volume_ownership(&dir, g, false)?;
        }
        return Ok(MountedVolume {
            host_path: dir,
            read_only: false,
        });
    }
    if let Some(cm) = &v.config_map {
        let payload = config_map_volume_payload(pod, cm, sources)?;
        return projection(Medium::Default, payload);
    }
    if let Some(s) = &v.secret {
        let payload = secret_volume_payload(pod, s, sources)?;
        return projection(Medium::Memory, payload);
    }
    if let Some(d) = &v.downward_api {
        let payload = downward_api_volume_payload(pod, d, node)?;
        return projection(Medium::Memory, payload);
    }
    if let Some(p) = &v.projected {
        let no_token = |_: &TokenRequest| Err("TokenRequest is not available".to_string());
        let (source, token): (ProjectedVolumeSource, TokenFn<'_>) = match tokens {
            Some(t) => (p.clone(), t),
            None => (without_tokens(pod, p, &v.name), &no_token),
        };
        let payload = projected_volume_payload(pod, &source, sources, node, token, None, fs_group)?;
        return projection(Medium::Memory, payload);
    }
    Err(VolumeError::Source(format!(
        "no volume plugin matched volume {}",
        kelson_apimachinery::labels::go_quote(&v.name)
    )))
}

/// Unmounts and removes every volume directory of the pod
/// (`<root>/pods/<uid>/volumes/*/*`); hostPath volumes live elsewhere and
/// are untouched. Missing directories are fine.
pub fn teardown_pod_volumes(
    root: &Path,
    pod_uid: &str,
    mounter: &dyn Mounter,
) -> Result<(), VolumeError> {
    if pod_uid.is_empty() || pod_uid.contains('/') || pod_uid == "." || pod_uid == ".." {
        return Err(VolumeError::InvalidPath(format!(
            "invalid pod uid {pod_uid:?}"
        )));
    }
    let vol_root = pod_dir(root, pod_uid).join("volumes");
    let plugins = match fs::read_dir(&vol_root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io(format!("read {}", vol_root.display()), e)),
    };
    let mut errs = Vec::new();
    for plugin in plugins.flatten() {
        let pdir = plugin.path();
        let Ok(entries) = fs::read_dir(&pdir) else {
            continue;
        };
        for vol in entries.flatten() {
            if let Err(e) = teardown_empty_dir(&vol.path(), mounter) {
                errs.push(e);
            }
        }
        // Empty now unless something failed above; then it stays.
        let _ = fs::remove_dir(&pdir);
    }
    let _ = fs::remove_dir(&vol_root);
    VolumeError::collect(errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIVolumeFile,
        DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, ObjectFieldSelector,
        PodSecurityContext, PodSpec, SecretVolumeSource, ServiceAccountTokenProjection,
        VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::os::unix::fs::MetadataExt;

    use crate::volumes::FakeMounter;

    fn cm(data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cfg".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("app.conf".to_string(), data.to_string())])),
            ..Default::default()
        }
    }

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sets_up_each_kind_and_refreshes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let host_dir = root.join("host-data");
        let p = pod(vec![
            Volume {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..vol("scratch")
            },
            Volume {
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    ..Default::default()
                }),
                ..vol("shm")
            },
            Volume {
                host_path: Some(HostPathVolumeSource {
                    path: host_dir.to_string_lossy().to_string(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..vol("data")
            },
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "cfg".into(),
                    ..Default::default()
                }),
                ..vol("config")
            },
            Volume {
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..vol("info")
            },
            Volume {
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![
                        VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: "cfg".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..vol("api-access")
            },
        ]);
        let m = FakeMounter::default();
        let node = NodeAllocatable {
            memory: Some(Quantity::parse("1Gi").unwrap()),
            ..Default::default()
        };
        let src = PodSources::from_objects("ns", vec![cm("x=1")], vec![], vec![], vec![]);
        let got = setup_pod_volumes(root, &p, &src, &node, &m).unwrap();
        let base = root.join("pods/uid-1/volumes");
        assert_eq!(
            got.volumes["scratch"],
            MountedVolume {
                host_path: base.join("kubernetes.io~empty-dir/scratch"),
                read_only: false
            }
        );
        assert_eq!(got.volumes["data"].host_path, host_dir);
        assert!(host_dir.is_dir());
        assert!(got.volumes["config"].read_only);
        let config = &got.volumes["config"].host_path;
        assert_eq!(fs::read_to_string(config.join("app.conf")).unwrap(), "x=1");
        let info = &got.volumes["info"].host_path;
        assert_eq!(fs::read_to_string(info.join("name")).unwrap(), "web");
        let api = &got.volumes["api-access"].host_path;
        assert_eq!(fs::read_to_string(api.join("app.conf")).unwrap(), "x=1");
        assert!(!api.join("token").exists());
        // tmpfs for the memory emptyDir (capped at allocatable), the
        // downwardAPI and projected volumes; the configMap is on disk.
        let mounts = m.mounts.lock().unwrap().clone();
        let shm = base.join("kubernetes.io~empty-dir/shm");
        assert!(mounts.contains(&(shm, Some(1 << 30))));
        assert_eq!(mounts.len(), 3);

        // A second sync with new ConfigMap content rewrites it, mounts
        // nothing more.
        let src = PodSources::from_objects("ns", vec![cm("x=2")], vec![], vec![], vec![]);
        setup_pod_volumes(root, &p, &src, &node, &m).unwrap();
        assert_eq!(fs::read_to_string(config.join("app.conf")).unwrap(), "x=2");
        assert_eq!(m.mounts.lock().unwrap().len(), 3);

        teardown_pod_volumes(root, "uid-1", &m).unwrap();
        assert!(m.mounts.lock().unwrap().is_empty());
        assert!(!base.exists());
        assert!(host_dir.is_dir());
        teardown_pod_volumes(root, "uid-1", &m).unwrap();
        assert!(teardown_pod_volumes(root, "..", &m).is_err());
    }

    #[test]
    fn failures_name_their_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pod(vec![
            Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some("missing".into()),
                    ..Default::default()
                }),
                ..vol("creds")
            },
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "absent".into(),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..vol("opt")
            },
        ]);
        // Objects not given read as not found, as prefetch records them.
        let src = PodSources::from_objects("ns", vec![], vec![], vec![], vec![]);
        let err = setup_pod_volumes(
            tmp.path(),
            &p,
            &src,
            &NodeAllocatable::default(),
            &FakeMounter::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"creds\" : secret \"missing\" not found"
        );

        // Unsupported kinds fail too.
        let p = pod(vec![Volume {
            persistent_volume_claim: Some(Default::default()),
            ..vol("pvc")
        }]);
        let err = setup_pod_volumes(
            tmp.path(),
            &p,
            &src,
            &NodeAllocatable::default(),
            &FakeMounter::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no volume plugin matched"),
            "{err}"
        );
    }

    #[test]
    fn empty_dir_gets_fs_group() {
        let tmp = tempfile::tempdir().unwrap();
        let gid = fs::metadata(tmp.path()).unwrap().gid();
        let mut p = pod(vec![Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..vol("scratch")
        }]);
        p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            fs_group: Some(i64::from(gid)),
            ..Default::default()
        });
        let src = PodSources::from_objects("ns", vec![], vec![], vec![], vec![]);
        let got = setup_pod_volumes(
            tmp.path(),
            &p,
            &src,
            &NodeAllocatable::default(),
            &FakeMounter::default(),
        )
        .unwrap();
        let meta = fs::metadata(&got.volumes["scratch"].host_path).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.mode() & 0o2000, 0o2000);
    }
}
