//! Payloads of configMap, secret, downwardAPI and projected volumes
//! (upstream `MakePayload`, `CollectData` and the projected plugin's
//! `collectData`).

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource, KeyToPath,
    Pod, ProjectedVolumeSource, Secret, SecretVolumeSource,
};

use super::atomic_writer::{FileProjection, Payload};
use super::{VolumeError, DEFAULT_MODE};
use crate::env::{pod_container_resource_value, pod_metadata_field, NodeAllocatable};

/// Where volume plugins read ConfigMaps and Secrets. `Ok(None)` is "not
/// found"; `Err(msg)` any other failure, passed through.
pub trait VolumeSources {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String>;
}

/// A service account token wanted by a projected volume; the caller's token
/// function turns it into a TokenRequest for the pod's service account,
/// bound to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account_name: String,
    /// Empty means the API server's default audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: Option<i64>,
    pub pod_name: String,
    pub pod_uid: String,
}

fn mode_of(m: Option<i32>) -> u32 {
    // Validation keeps modes within 0..=0777; a negative one reads as 0.
    u32::try_from(m.unwrap_or(DEFAULT_MODE)).unwrap_or(0)
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("")
}

/// Key → content of a ConfigMap (`data` then `binaryData`).
fn config_map_entries(cm: &ConfigMap) -> Vec<(&str, Vec<u8>)> {
    let mut out: Vec<(&str, Vec<u8>)> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes().to_vec()))
        .collect();
    out.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.clone())),
    );
    out
}

fn secret_entries(s: &Secret) -> Vec<(&str, Vec<u8>)> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.clone()))
        .collect()
}

/// Every key under its own name, or the listed items under their paths.
fn make_payload(
    entries: &[(&str, Vec<u8>)],
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing: impl Fn(&str) -> VolumeError,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    let items = items.unwrap_or(&[]);
    if items.is_empty() {
        for (k, v) in entries {
            out.insert(k.to_string(), file(v.clone(), default_mode));
        }
        return Ok(out);
    }
    for item in items {
        // `data` wins over `binaryData` for the same key, as upstream.
        match entries.iter().find(|(k, _)| *k == item.key) {
            Some((_, v)) => {
                let mode = item.mode.map_or(default_mode, |m| mode_of(Some(m)));
                out.insert(item.path.clone(), file(v.clone(), mode));
            }
            None if optional => {}
            None => return Err(missing(&item.key)),
        }
    }
    Ok(out)
}

fn file(data: Vec<u8>, mode: u32) -> FileProjection {
    FileProjection {
        data,
        mode,
        fs_user: None,
    }
}

/// Fetches a ConfigMap for a volume: a missing optional one is empty.
fn fetch_config_map(
    sources: &dyn VolumeSources,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<ConfigMap, VolumeError> {
    match sources.config_map(ns, name).map_err(VolumeError::Source)? {
        Some(cm) => Ok(cm),
        None if optional => Ok(ConfigMap::default()),
        None => Err(VolumeError::ConfigMapNotFound { name: name.into() }),
    }
}

fn fetch_secret(
    sources: &dyn VolumeSources,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Secret, VolumeError> {
    match sources.secret(ns, name).map_err(VolumeError::Source)? {
        Some(s) => Ok(s),
        None if optional => Ok(Secret::default()),
        None => Err(VolumeError::SecretNotFound { name: name.into() }),
    }
}

/// The files of a configMap volume.
pub fn config_map_volume_payload(
    pod: &Pod,
    source: &ConfigMapVolumeSource,
    sources: &dyn VolumeSources,
) -> Result<Payload, VolumeError> {
    let optional = source.optional == Some(true);
    let cm = fetch_config_map(sources, namespace(pod), &source.name, optional)?;
    make_payload(
        &config_map_entries(&cm),
        source.items.as_deref(),
        mode_of(source.default_mode),
        optional,
        |k| VolumeError::ConfigMapKeyMissing(k.to_string()),
    )
}

/// The files of a secret volume.
pub fn secret_volume_payload(
    pod: &Pod,
    source: &SecretVolumeSource,
    sources: &dyn VolumeSources,
) -> Result<Payload, VolumeError> {
    let optional = source.optional == Some(true);
    let name = source.secret_name.as_deref().unwrap_or("");
    let s = fetch_secret(sources, namespace(pod), name, optional)?;
    make_payload(
        &secret_entries(&s),
        source.items.as_deref(),
        mode_of(source.default_mode),
        optional,
        |k| VolumeError::SecretKeyMissing(k.to_string()),
    )
}

/// The files of a downwardAPI volume (upstream `CollectData`): item paths
/// are cleaned, failures of all items are reported together.
pub fn downward_api_volume_payload(
    pod: &Pod,
    source: &DownwardAPIVolumeSource,
    allocatable: &NodeAllocatable,
) -> Result<Payload, VolumeError> {
    collect_downward(
        pod,
        source.items.as_deref().unwrap_or(&[]),
        mode_of(source.default_mode),
        allocatable,
    )
}

fn collect_downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    allocatable: &NodeAllocatable,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    let mut errs = Vec::new();
    for item in items {
        let mode = item.mode.map_or(default_mode, |m| mode_of(Some(m)));
        let mut data = Vec::new();
        if let Some(f) = &item.field_ref {
            match pod_metadata_field(pod, &f.field_path) {
                Ok(v) => data = v.into_bytes(),
                Err(e) => errs.push(e.into()),
            }
        } else if let Some(r) = &item.resource_field_ref {
            match pod_container_resource_value(r, pod, allocatable) {
                Ok(v) => data = v.into_bytes(),
                Err(e) => errs.push(e.into()),
            }
        }
        out.insert(clean(&item.path), file(data, mode));
    }
    VolumeError::collect(errs)?;
    Ok(out)
}

/// `filepath.Clean` for the relative item paths validation allows.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// The files of a projected volume: its sources in order (later ones win on
/// the same path); every failing source is reported, together.
/// Service account tokens come from `token`; with `fs_user` or `fs_group`
/// set they are written 0600 (ownership then grants the group), else with
/// the volume's default mode. ClusterTrustBundle sources are not supported
/// and are skipped.
pub fn projected_volume_payload(
    pod: &Pod,
    source: &ProjectedVolumeSource,
    sources: &dyn VolumeSources,
    allocatable: &NodeAllocatable,
    token: &dyn Fn(&TokenRequest) -> Result<String, String>,
    fs_user: Option<u32>,
    fs_group: Option<u32>,
) -> Result<Payload, VolumeError> {
    let default_mode = mode_of(source.default_mode);
    let ns = namespace(pod);
    let mut out = Payload::new();
    let mut errs = Vec::new();
    for proj in source.sources.as_deref().unwrap_or(&[]) {
        let part = if let Some(s) = &proj.secret {
            let optional = s.optional == Some(true);
            fetch_secret(sources, ns, &s.name, optional).and_then(|secret| {
                make_payload(
                    &secret_entries(&secret),
                    s.items.as_deref(),
                    default_mode,
                    optional,
                    |k| VolumeError::SecretKeyMissing(k.to_string()),
                )
            })
        } else if let Some(c) = &proj.config_map {
            let optional = c.optional == Some(true);
            fetch_config_map(sources, ns, &c.name, optional).and_then(|cm| {
                make_payload(
                    &config_map_entries(&cm),
                    c.items.as_deref(),
                    default_mode,
                    optional,
                    |k| VolumeError::ConfigMapKeyMissing(k.to_string()),
                )
            })
        } else if let Some(d) = &proj.downward_api {
            collect_downward(
                pod,
                d.items.as_deref().unwrap_or(&[]),
                default_mode,
                allocatable,
            )
        } else if let Some(t) = &proj.service_account_token {
            let req = TokenRequest {
                namespace: ns.to_string(),
                service_account_name: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                audiences: t
                    .audience
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
                expiration_seconds: t.expiration_seconds,
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            };
            let mode = if fs_user.is_some() || fs_group.is_some() {
                0o600
            } else {
                default_mode
            };
            token(&req).map_err(VolumeError::Source).map(|tok| {
                Payload::from([(
                    t.path.clone(),
                    FileProjection {
                        data: tok.into_bytes(),
                        mode,
                        fs_user,
                    },
                )])
            })
        } else {
            continue;
        };
        match part {
            Ok(p) => out.extend(p),
            Err(e) => errs.push(e),
        }
    }
    VolumeError::collect(errs)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
