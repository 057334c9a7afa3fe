//! hostPath `type` checks (pkg/volume/hostpath `checkType`).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::VolumeError;

/// What a path is, following symlinks (upstream `GetFileType`: anything not
/// a directory, socket or device counts as a file).
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Missing,
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

fn kind(path: &Path) -> Kind {
    let Ok(meta) = fs::metadata(path) else {
        return Kind::Missing;
    };
    let t = meta.file_type();
    if t.is_dir() {
        Kind::Directory
    } else if t.is_socket() {
        Kind::Socket
    } else if t.is_char_device() {
        Kind::CharDevice
    } else if t.is_block_device() {
        Kind::BlockDevice
    } else {
        Kind::File
    }
}

/// Checks (or, for the `...OrCreate` types, creates) a hostPath volume's
/// path per its `type`: `DirectoryOrCreate` makes the directory (0755, with
/// parents), `FileOrCreate` an empty 0644 file (its parent must exist);
/// `""` / unset checks nothing.
pub fn check_host_path_type(path: &Path, type_: Option<&str>) -> Result<(), VolumeError> {
    let shown = || path.display().to_string();
    let t = type_.unwrap_or("");
    let k = kind(path);
    match t {
        "" => Ok(()),
        "DirectoryOrCreate" | "Directory" => {
            if k == Kind::Missing && t == "DirectoryOrCreate" {
                return fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| VolumeError::io(format!("mkdir {}", shown()), e));
            }
            match k {
                Kind::Missing => Err(VolumeError::HostPathMissing(shown())),
                Kind::Directory => Ok(()),
                _ => Err(VolumeError::HostPathNotDirectory(shown())),
            }
        }
        "FileOrCreate" | "File" => {
            if k == Kind::Missing && t == "FileOrCreate" {
                return OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map(drop)
                    .map_err(|e| VolumeError::io(format!("create {}", shown()), e));
            }
            match k {
                Kind::Missing => Err(VolumeError::HostPathMissing(shown())),
                Kind::File => Ok(()),
                _ => Err(VolumeError::HostPathNotFile(shown())),
            }
        }
        "Socket" if k != Kind::Socket => Err(VolumeError::HostPathNotSocket(shown())),
        "CharDevice" if k != Kind::CharDevice => Err(VolumeError::HostPathNotCharDevice(shown())),
        "BlockDevice" if k != Kind::BlockDevice => {
            Err(VolumeError::HostPathNotBlockDevice(shown()))
        }
        "Socket" | "CharDevice" | "BlockDevice" => Ok(()),
        other => Err(VolumeError::InvalidHostPathType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    #[test]
    fn type_checks_and_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let dir = base.join("d");
        let file = base.join("f");
        fs::create_dir(&dir).unwrap();
        fs::write(&file, "x").unwrap();
        let missing = base.join("missing");
        let msg = |p: &Path, t: &str| check_host_path_type(p, Some(t)).unwrap_err().to_string();
        let s = |p: &Path| p.display().to_string();

        assert!(check_host_path_type(&missing, None).is_ok());
        assert!(check_host_path_type(&missing, Some("")).is_ok());
        assert!(check_host_path_type(&dir, Some("Directory")).is_ok());
        assert!(check_host_path_type(&file, Some("File")).is_ok());
        assert_eq!(
            msg(&missing, "Directory"),
            format!("hostPath type check failed: {} does not exist", s(&missing))
        );
        assert_eq!(
            msg(&file, "Directory"),
            format!(
                "hostPath type check failed: {} is not a directory",
                s(&file)
            )
        );
        assert_eq!(
            msg(&dir, "File"),
            format!("hostPath type check failed: {} is not a file", s(&dir))
        );
        assert_eq!(
            msg(&missing, "File"),
            format!("hostPath type check failed: {} does not exist", s(&missing))
        );
        assert_eq!(
            msg(&file, "Socket"),
            format!(
                "hostPath type check failed: {} is not a socket file",
                s(&file)
            )
        );
        assert_eq!(
            msg(&file, "CharDevice"),
            format!(
                "hostPath type check failed: {} is not a character device",
                s(&file)
            )
        );
        assert_eq!(
            msg(&file, "BlockDevice"),
            format!(
                "hostPath type check failed: {} is not a block device",
                s(&file)
            )
        );
        assert_eq!(msg(&file, "Bogus"), "Bogus is an invalid volume type");
        // Existing paths of the wrong kind are not "created over".
        assert_eq!(
            msg(&file, "DirectoryOrCreate"),
            format!(
                "hostPath type check failed: {} is not a directory",
                s(&file)
            )
        );
        assert_eq!(
            msg(&dir, "FileOrCreate"),
            format!("hostPath type check failed: {} is not a file", s(&dir))
        );

        let sock = base.join("s.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        assert!(check_host_path_type(&sock, Some("Socket")).is_ok());
        assert!(check_host_path_type(Path::new("/dev/null"), Some("CharDevice")).is_ok());

        let nested = base.join("a/b/c");
        check_host_path_type(&nested, Some("DirectoryOrCreate")).unwrap();
        assert!(nested.is_dir());
        let newfile = base.join("new.txt");
        check_host_path_type(&newfile, Some("FileOrCreate")).unwrap();
        assert!(newfile.is_file());
        assert_eq!(
            fs::metadata(&newfile).unwrap().permissions().mode() & 0o022,
            0
        );
        // FileOrCreate does not create parent directories.
        assert!(check_host_path_type(&base.join("no/such.txt"), Some("FileOrCreate")).is_err());
    }
}
