//! Image archives for the node's containerd: `kelson images import`, and
//! the archives under `DATA_DIR/agent/images` loaded at agent start (as
//! k3s loads `agent/images/*.tar`), for air-gapped nodes.

use kelson_cri::containerd::{Containerd, ContainerdOptions, ContainerdPaths};
use kelson_cri::import::{import_all, import_tarball, ImportError};
use kelson_cri::Cri;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a socket may take to answer before the node's containerd is
/// taken for not running.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("image archive {path}: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("starting a temporary containerd for the import: {0}")]
    Containerd(#[from] kelson_cri::containerd::ContainerdError),
}

/// The agent's part of a data dir (`DATA_DIR/agent`), which is also the
/// data dir given to its containerd.
pub fn agent_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent")
}

/// Archives imported at every agent start.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    agent_dir(data_dir).join("images")
}

/// The node's containerd files for `data_dir` (`DATA_DIR/agent/containerd`).
pub fn containerd_paths(data_dir: &Path) -> ContainerdPaths {
    ContainerdPaths::new(&agent_dir(data_dir))
}

/// Whether a CRI runtime answers on `socket`.
pub async fn answering(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    let probe = async {
        let mut cri = Cri::connect(socket).await.ok()?;
        cri.version().await.ok()
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(_))
    )
}

/// `kelson images import FILE`: imports one archive (OCI layout or
/// docker-archive tarball) into the node's containerd in `data_dir`; if that
/// containerd is not running, a temporary one is started on the same data
/// dir and stopped afterwards (the images are in its store for the next
/// start). Returns the imported image names.
pub async fn import(data_dir: &Path, file: &Path) -> Result<Vec<String>, ImagesError> {
    import_many(data_dir, &[file.to_path_buf()]).await
}

/// [`import`] for several archives, with at most one temporary containerd.
pub async fn import_many(data_dir: &Path, files: &[PathBuf]) -> Result<Vec<String>, ImagesError> {
    // A clear error for a typo, before any containerd is started.
    for file in files {
        let meta = std::fs::metadata(file).map_err(|source| ImagesError::Archive {
            path: file.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(ImagesError::Archive {
                path: file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
    }
    let paths = containerd_paths(data_dir);
    if answering(&paths.socket).await {
        tracing::info!(socket = %paths.socket.display(), "importing into the running containerd");
        return import_files(&paths.socket, files).await;
    }
    tracing::info!(data_dir = %data_dir.display(), "containerd not running; starting a temporary one");
    let mut containerd = Containerd::start(ContainerdOptions::new(agent_dir(data_dir))).await?;
    let result = import_files(containerd.socket(), files).await;
    // Stop it whatever the import did; the import's error matters more.
    let stopped = containerd.stop().await;
    let names = result?;
    stopped?;
    Ok(names)
}

async fn import_files(socket: &Path, files: &[PathBuf]) -> Result<Vec<String>, ImagesError> {
    let mut names = Vec::new();
    for file in files {
        for name in import_tarball(socket, file).await? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// Imports every `*.tar` in `dir` into the containerd at `socket` (a
/// missing directory imports nothing); returns the image names.
pub async fn import_dir(socket: &Path, dir: &Path) -> Result<Vec<String>, ImagesError> {
    Ok(import_all(socket, dir).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_under_the_data_dir() {
        let d = Path::new("/var/lib/kelson");
        assert_eq!(images_dir(d), Path::new("/var/lib/kelson/agent/images"));
        assert_eq!(
            containerd_paths(d).socket,
            Path::new("/var/lib/kelson/agent/containerd/containerd.sock")
        );
        assert_eq!(
            containerd_paths(d).cni_conf_dir,
            Path::new("/var/lib/kelson/agent/cni/net.d")
        );
    }

    #[tokio::test]
    async fn a_missing_archive_fails_before_containerd_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = import(dir.path(), &dir.path().join("nope.tar"))
            .await
            .expect_err("missing file");
        assert!(matches!(err, ImagesError::Archive { .. }), "{err:?}");
        // Nothing was set up under the data dir.
        assert!(!agent_dir(dir.path()).exists());
    }

    #[tokio::test]
    async fn a_dead_socket_is_not_answering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("c.sock");
        assert!(!answering(&sock).await);
        // A socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
        assert!(sock.exists());
        assert!(!answering(&sock).await);
    }
}
