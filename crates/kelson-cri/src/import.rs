//! Loading image archives into containerd's `k8s.io` namespace (the one the
//! CRI plugin serves) with Debian's `ctr`.
//!
//! `ctr images import` reads OCI layouts and docker-archive tarballs and
//! unpacks them into the default snapshotter (overlayfs, as the CRI uses).
//! The CRI plugin learns about the images from containerd's image events, so
//! they show up in `ImageStatus` shortly after the import returns.

use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The containerd namespace of the CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("running ctr: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("ctr images import {path} failed ({status}): {stderr}")]
    Failed {
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("ctr images import {0} imported no named image")]
    NoImages(PathBuf),
    #[error("listing {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The image names in ctr's import output: it prints
/// `unpacking NAME (sha256:…)...done` for each image it unpacks.
fn names_from_output(stdout: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.trim().strip_prefix("unpacking ") else {
            continue;
        };
        let name = match rest.split_once(" (") {
            Some((name, _)) => name,
            None => rest.split_whitespace().next().unwrap_or(""),
        };
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Imports one archive into the `k8s.io` namespace of the containerd at
/// `containerd_socket`; returns the names of the imported images.
pub async fn import_tarball(
    containerd_socket: &Path,
    path: &Path,
) -> Result<Vec<String>, ImportError> {
    let started = std::time::Instant::now();
    let output = Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket)
        .arg("--namespace")
        .arg(CRI_NAMESPACE)
        .args(["images", "import"])
        // The CRI plugin uses overlayfs; do not let CONTAINERD_SNAPSHOTTER
        // in our environment unpack elsewhere.
        .args(["--snapshotter", "overlayfs"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(ImportError::Spawn)?;
    if !output.status.success() {
        return Err(ImportError::Failed {
            path: path.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let names = names_from_output(&String::from_utf8_lossy(&output.stdout));
    if names.is_empty() {
        return Err(ImportError::NoImages(path.to_path_buf()));
    }
    tracing::info!(archive = %path.display(), images = ?names, elapsed = ?started.elapsed(), "imported images");
    Ok(names)
}

/// Imports every `*.tar` in `dir` (sorted by name); returns all image names.
/// A missing directory imports nothing.
pub async fn import_all(containerd_socket: &Path, dir: &Path) -> Result<Vec<String>, ImportError> {
    let read_err = |source| ImportError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut archives = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    while let Some(entry) = entries.next_entry().await.map_err(read_err)? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tar") && path.is_file() {
            archives.push(path);
        }
    }
    archives.sort();
    let mut names = Vec::new();
    for archive in archives {
        names.extend(import_tarball(containerd_socket, &archive).await?);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_import_output() {
        let out = "unpacking kelson.dev/pause:1 (sha256:0123abcd)...done\n\
                   unpacking docker.io/library/busybox:e2e (sha256:89ab)...done\n";
        assert_eq!(
            names_from_output(out),
            vec!["kelson.dev/pause:1", "docker.io/library/busybox:e2e"]
        );
        assert!(names_from_output("").is_empty());
    }

    #[tokio::test]
    async fn missing_dir_imports_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = import_all(Path::new("/nonexistent.sock"), &dir.path().join("none"))
            .await
            .expect("nothing to do");
        assert!(names.is_empty());
    }
}
