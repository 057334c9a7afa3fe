//! `subPath` checks and resolution (kubelet `makeMounts`).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::VolumeError;

/// Upstream's checks on a (possibly expanded) subPath: relative and without
/// `..` elements.
pub fn validate_sub_path(sub_path: &str) -> Result<(), VolumeError> {
    if sub_path.starts_with('/') {
        return Err(VolumeError::SubPathAbsolute(sub_path.to_string()));
    }
    if sub_path.split('/').any(|p| p == "..") {
        return Err(VolumeError::SubPathBacksteps(sub_path.to_string()));
    }
    Ok(())
}

/// The host path to mount for `sub_path` of the volume at `volume_path`.
/// A missing subPath is created as a directory with the volume root's mode
/// (as upstream, so fsGroup-writable volumes stay writable). The resolved
/// path, symlinks followed, must stay inside the volume: upstream's
/// PrepareSafeSubpath refuses the same escapes.
pub fn resolve_sub_path(
    volume_path: &Path,
    sub_path: &str,
    volume_name: &str,
    container_name: &str,
) -> Result<PathBuf, VolumeError> {
    validate_sub_path(sub_path)?;
    let prepare_err = || VolumeError::SubPathPrepare {
        volume: volume_name.to_string(),
        container: container_name.to_string(),
    };
    let create_err = || VolumeError::SubPathCreate {
        volume: volume_name.to_string(),
        container: container_name.to_string(),
    };
    let root = fs::canonicalize(volume_path).map_err(|_| prepare_err())?;
    let wanted = volume_path.join(sub_path);
    if fs::symlink_metadata(&wanted).is_err() {
        let mode = fs::metadata(&root)
            .map_err(|_| create_err())?
            .permissions()
            .mode()
            & 0o7777;
        // Create level by level so an existing symlink on the way that leads
        // out of the volume is caught before anything is made outside.
        let mut cur = root.clone();
        for comp in Path::new(sub_path).components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            cur.push(name);
            match fs::symlink_metadata(&cur) {
                Ok(_) => {
                    cur = fs::canonicalize(&cur).map_err(|_| create_err())?;
                    if !cur.starts_with(&root) {
                        return Err(create_err());
                    }
                }
                Err(_) => {
                    fs::DirBuilder::new()
                        .mode(mode)
                        .create(&cur)
                        .map_err(|_| create_err())?;
                    // The umask masked the create mode.
                    fs::set_permissions(&cur, fs::Permissions::from_mode(mode))
                        .map_err(|_| create_err())?;
                }
            }
        }
    }
    let resolved = fs::canonicalize(&wanted).map_err(|_| prepare_err())?;
    if !resolved.starts_with(&root) {
        return Err(prepare_err());
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn validation_messages() {
        assert!(validate_sub_path("a/b").is_ok());
        assert!(validate_sub_path("a..b/..c").is_ok());
        assert_eq!(
            validate_sub_path("/etc").unwrap_err().to_string(),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            validate_sub_path("a/../../etc").unwrap_err().to_string(),
            "unable to provision SubPath `a/../../etc`: must not contain '..'"
        );
    }

    #[test]
    fn resolves_creates_and_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir(&vol).unwrap();
        fs::set_permissions(&vol, fs::Permissions::from_mode(0o775)).unwrap();
        fs::write(vol.join("file"), "x").unwrap();

        let got = resolve_sub_path(&vol, "file", "v", "c").unwrap();
        assert_eq!(got, fs::canonicalize(vol.join("file")).unwrap());

        let made = resolve_sub_path(&vol, "logs/app", "v", "c").unwrap();
        assert!(made.is_dir());
        assert_eq!(
            fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o775
        );

        // A symlink pointing outside the volume is refused.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        symlink(&outside, vol.join("escape")).unwrap();
        assert_eq!(
            resolve_sub_path(&vol, "escape", "v", "c")
                .unwrap_err()
                .to_string(),
            "failed to prepare subPath for volumeMount \"v\" of container \"c\""
        );
        assert_eq!(
            resolve_sub_path(&vol, "escape/new", "v", "c")
                .unwrap_err()
                .to_string(),
            "failed to create subPath directory for volumeMount \"v\" of container \"c\""
        );
        assert!(!outside.join("new").exists());
    }
}
