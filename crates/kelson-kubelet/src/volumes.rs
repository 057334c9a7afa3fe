//! Pod volumes on the node, as upstream's `pkg/volume`: the directory
//! layout, the atomic writer behind configMap / secret / downwardAPI /
//! projected volumes and their payloads, emptyDir (tmpfs for medium
//! `Memory`, through a [`Mounter`]), hostPath type checks and subPath
//! handling.
//!
//! Error messages are upstream's: the kubelet reports them in `FailedMount`
//! events and container errors.

use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Volume;

use crate::env::EnvError;

mod atomic_writer;
mod emptydir;
mod hostpath;
mod payload;
mod subpath;

pub use atomic_writer::{AtomicWriter, FileProjection, Payload};
pub use emptydir::{
    empty_dir_memory_size, set_volume_ownership, setup_empty_dir, setup_projection_volume,
    teardown_empty_dir, CommandMounter, FakeMounter, Medium, Mounter,
};
pub use hostpath::check_host_path_type;
pub use payload::{
    config_map_volume_payload, downward_api_volume_payload, projected_volume_payload,
    secret_volume_payload, TokenRequest, VolumeSources,
};
pub use subpath::{resolve_sub_path, validate_sub_path};

/// The mode of projected files when the pod spec sets none (the API
/// server's default, 0644).
pub const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Upstream atomic writer path checks; the message is complete.
    #[error("{0}")]
    InvalidPath(String),
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { name: String },
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKeyMissing(String),
    #[error("references non-existent secret key: {0}")]
    SecretKeyMissing(String),
    /// A lookup (ConfigMap, Secret, token) failed; its message as given.
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Field(#[from] EnvError),
    /// Several failures, formatted as Go's `utilerrors.NewAggregate`.
    #[error("{}", aggregate_message(.0))]
    Aggregate(Vec<VolumeError>),
    #[error("hostPath type check failed: {0} does not exist")]
    HostPathMissing(String),
    #[error("hostPath type check failed: {0} is not a directory")]
    HostPathNotDirectory(String),
    #[error("hostPath type check failed: {0} is not a file")]
    HostPathNotFile(String),
    #[error("hostPath type check failed: {0} is not a socket file")]
    HostPathNotSocket(String),
    #[error("hostPath type check failed: {0} is not a character device")]
    HostPathNotCharDevice(String),
    #[error("hostPath type check failed: {0} is not a block device")]
    HostPathNotBlockDevice(String),
    #[error("{0} is an invalid volume type")]
    InvalidHostPathType(String),
    #[error("error SubPath `{0}` must not be an absolute path")]
    SubPathAbsolute(String),
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    SubPathBacksteps(String),
    #[error("failed to create subPath directory for volumeMount {} of container {}", go_q(.volume), go_q(.container))]
    SubPathCreate { volume: String, container: String },
    #[error("failed to prepare subPath for volumeMount {} of container {}", go_q(.volume), go_q(.container))]
    SubPathPrepare { volume: String, container: String },
    #[error("unsupported emptyDir medium {}", go_q(.0))]
    UnsupportedMedium(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

use kelson_apimachinery::labels::go_quote as go_q;

/// Go's aggregate error text: one message alone, several (deduplicated) in
/// brackets.
fn aggregate_message(errs: &[VolumeError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

impl VolumeError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> VolumeError {
        VolumeError::Io {
            context: context.into(),
            source,
        }
    }

    /// `Ok` for none, the error for one, an aggregate for several.
    pub(crate) fn collect(errs: Vec<VolumeError>) -> Result<(), VolumeError> {
        // Go's aggregate flattens nested aggregates.
        let mut errs: Vec<VolumeError> = errs
            .into_iter()
            .flat_map(|e| match e {
                VolumeError::Aggregate(inner) => inner,
                other => vec![other],
            })
            .collect();
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            _ => Err(VolumeError::Aggregate(errs)),
        }
    }
}

/// `<root>/pods/<uid>`.
pub fn pod_dir(root: &Path, pod_uid: &str) -> PathBuf {
    root.join("pods").join(pod_uid)
}

/// `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`, where upstream
/// keeps a volume plugin's data (the plugin name with `/` escaped as `~`).
pub fn pod_volume_dir(root: &Path, pod_uid: &str, plugin: &str, volume_name: &str) -> PathBuf {
    pod_dir(root, pod_uid)
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(volume_name)
}

/// The short plugin name of the volume kinds handled here (`configmap`,
/// `secret`, `downward-api`, `projected`, `empty-dir`, `host-path`).
pub fn plugin_name(volume: &Volume) -> Option<&'static str> {
    if volume.config_map.is_some() {
        Some("configmap")
    } else if volume.secret.is_some() {
        Some("secret")
    } else if volume.downward_api.is_some() {
        Some("downward-api")
    } else if volume.projected.is_some() {
        Some("projected")
    } else if volume.empty_dir.is_some() {
        Some("empty-dir")
    } else if volume.host_path.is_some() {
        Some("host-path")
    } else {
        None
    }
}

/// Where the volume's content lives on the host (what containers bind
/// mount): the hostPath itself, else the plugin directory of the pod.
pub fn volume_host_path(root: &Path, pod_uid: &str, volume: &Volume) -> Option<PathBuf> {
    if let Some(hp) = &volume.host_path {
        return Some(PathBuf::from(&hp.path));
    }
    plugin_name(volume).map(|p| pod_volume_dir(root, pod_uid, p, &volume.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, HostPathVolumeSource};

    #[test]
    fn layout_matches_upstream() {
        let root = Path::new("/var/lib/kubelet");
        assert_eq!(
            pod_volume_dir(root, "u1", "configmap", "cfg"),
            Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~configmap/cfg")
        );
        let v = Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        assert_eq!(
            volume_host_path(root, "u1", &v).unwrap(),
            Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/scratch")
        );
        let v = Volume {
            name: "logs".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/var/log".into(),
                type_: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            volume_host_path(root, "u1", &v).unwrap(),
            Path::new("/var/log")
        );
        assert_eq!(volume_host_path(root, "u1", &Volume::default()), None);
    }

    #[test]
    fn aggregate_messages_like_go() {
        let one = VolumeError::Aggregate(vec![VolumeError::SecretNotFound { name: "a".into() }]);
        assert_eq!(one.to_string(), "secret \"a\" not found");
        let two = VolumeError::Aggregate(vec![
            VolumeError::SecretNotFound { name: "a".into() },
            VolumeError::ConfigMapKeyMissing("k".into()),
            VolumeError::SecretNotFound { name: "a".into() },
        ]);
        assert_eq!(
            two.to_string(),
            "[secret \"a\" not found, configmap references non-existent config key: k]"
        );
    }
}
