//! emptyDir (pkg/volume/emptydir) and the emptyDir-backed setup of
//! configMap / secret / downwardAPI / projected volumes, plus fsGroup
//! ownership (pkg/volume/volume_linux.go).

use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kelson_apimachinery::quantity::Quantity;

use super::atomic_writer::{AtomicWriter, Payload};
use super::VolumeError;
use crate::resources::{pod_resource_config, QUOTA_PERIOD};

/// Mounting, kept behind a trait so tests (and unprivileged runs) need no
/// root.
pub trait Mounter {
    /// Mounts a tmpfs at `path`, capped at `size_limit` bytes when given.
    fn mount_tmpfs(&self, path: &Path, size_limit: Option<u64>) -> io::Result<()>;
    fn unmount(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` is a mount point; by default read from
    /// `/proc/self/mountinfo`.
    fn is_mounted(&self, path: &Path) -> io::Result<bool> {
        let info = fs::read_to_string("/proc/self/mountinfo")?;
        let want = fs::canonicalize(path)?;
        Ok(info.lines().any(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| Path::new(&unescape_mountinfo(mp)) == want)
        }))
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            out.push(char::from_u32(d(1) * 64 + d(2) * 8 + d(3)).unwrap_or('?'));
            i += 4;
        } else {
            let ch = s[i..].chars().next().unwrap_or('?');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Runs the `mount` / `umount` commands (needs root).
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandMounter;

impl Mounter for CommandMounter {
    fn mount_tmpfs(&self, path: &Path, size_limit: Option<u64>) -> io::Result<()> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs"]);
        if let Some(size) = size_limit.filter(|s| *s > 0) {
            cmd.args(["-o", &format!("size={size}")]);
        }
        cmd.arg("tmpfs").arg(path);
        run(cmd)
    }

    fn unmount(&self, path: &Path) -> io::Result<()> {
        let mut cmd = Command::new("umount");
        cmd.arg(path);
        run(cmd)
    }
}

fn run(mut cmd: Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} failed ({}): {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Records mounts instead of making them.
#[derive(Debug, Default)]
pub struct FakeMounter {
    /// Current mounts: path and size limit.
    pub mounts: Mutex<Vec<(PathBuf, Option<u64>)>>,
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, path: &Path, size_limit: Option<u64>) -> io::Result<()> {
        let mut m = self
            .mounts
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        m.push((path.to_path_buf(), size_limit));
        Ok(())
    }

    fn unmount(&self, path: &Path) -> io::Result<()> {
        let mut m = self
            .mounts
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        let before = m.len();
        m.retain(|(p, _)| p != path);
        if m.len() == before {
            return Err(io::Error::new(ErrorKind::InvalidInput, "not mounted"));
        }
        Ok(())
    }

    fn is_mounted(&self, path: &Path) -> io::Result<bool> {
        let m = self
            .mounts
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Ok(m.iter().any(|(p, _)| p == path))
    }
}

/// Storage medium of an emptyDir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// The node's disk (a directory under the pod directory).
    Default,
    /// tmpfs.
    Memory,
}

impl Medium {
    /// `""` and `"Memory"`; HugePages media are not supported here.
    pub fn parse(medium: Option<&str>) -> Result<Medium, VolumeError> {
        match medium.unwrap_or("") {
            "" => Ok(Medium::Default),
            "Memory" => Ok(Medium::Memory),
            other => Err(VolumeError::UnsupportedMedium(other.to_string())),
        }
    }
}

/// emptyDir directories are world-writable, as upstream's `perm`.
const EMPTY_DIR_PERM: u32 = 0o777;

/// Creates the emptyDir at `dir` (mode 0777 whatever the umask) and, for
/// `Memory`, mounts a tmpfs there unless one is already mounted.
pub fn setup_empty_dir(
    dir: &Path,
    medium: Medium,
    size_limit: Option<u64>,
    mounter: &dyn Mounter,
) -> Result<(), VolumeError> {
    fs::create_dir_all(dir).map_err(|e| VolumeError::io(format!("mkdir {}", dir.display()), e))?;
    chmod_if_needed(dir, EMPTY_DIR_PERM)?;
    if medium == Medium::Memory {
        let mounted = mounter
            .is_mounted(dir)
            .map_err(|e| VolumeError::io(format!("check mount of {}", dir.display()), e))?;
        if !mounted {
            mounter
                .mount_tmpfs(dir, size_limit)
                .map_err(|e| VolumeError::io(format!("mount tmpfs on {}", dir.display()), e))?;
            // A fresh tmpfs root gets its own mode.
            chmod_if_needed(dir, EMPTY_DIR_PERM)?;
        }
    }
    Ok(())
}

fn chmod_if_needed(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| VolumeError::io(format!("stat {}", dir.display()), e))?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|e| VolumeError::io(format!("chmod {}", dir.display()), e))?;
    }
    Ok(())
}

/// Unmounts (when mounted) and removes an emptyDir or emptyDir-backed
/// volume directory. A missing directory is fine.
pub fn teardown_empty_dir(dir: &Path, mounter: &dyn Mounter) -> Result<(), VolumeError> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let mounted = mounter
        .is_mounted(dir)
        .map_err(|e| VolumeError::io(format!("check mount of {}", dir.display()), e))?;
    if mounted {
        mounter
            .unmount(dir)
            .map_err(|e| VolumeError::io(format!("unmount {}", dir.display()), e))?;
    }
    fs::remove_dir_all(dir).map_err(|e| VolumeError::io(format!("remove {}", dir.display()), e))
}

/// Upstream `calculateEmptyDirMemorySize`: a memory-backed volume may hold
/// at most the node's allocatable memory, or the pod's memory limit when
/// smaller, or the volume's `sizeLimit` when smaller still. Bytes.
pub fn empty_dir_memory_size(
    node_allocatable_memory: Option<&Quantity>,
    pod: &Pod,
    size_limit: Option<&Quantity>,
) -> Result<Option<u64>, VolumeError> {
    let to_u64 = |v: i128| u64::try_from(v).ok();
    let mut size = node_allocatable_memory.and_then(|q| to_u64(q.value()));
    let pod_limit = pod_resource_config(pod, false, QUOTA_PERIOD)
        .map_err(|e| VolumeError::Source(e.to_string()))?
        .memory_limit_in_bytes
        .and_then(|v| u64::try_from(v).ok());
    let mut shrink = |cand: Option<u64>| {
        if let Some(c) = cand.filter(|c| *c > 0) {
            if size.is_none_or(|s| c <= s) {
                size = Some(c);
            }
        }
    };
    shrink(pod_limit);
    shrink(size_limit.and_then(|q| to_u64(q.value())));
    Ok(size)
}

/// Upstream `SetVolumeOwnership` for `fs_group`: every file and directory
/// under `dir` gets group `fs_group` and group read (and write unless
/// `read_only`) permission; directories also get setgid and group/other
/// search. Symlinks are re-grouped but not chmodded.
pub fn set_volume_ownership(dir: &Path, fs_group: u32, read_only: bool) -> Result<(), VolumeError> {
    fn visit(p: &Path, gid: u32, read_only: bool) -> io::Result<()> {
        let meta = fs::symlink_metadata(p)?;
        std::os::unix::fs::lchown(p, Some(meta.uid()), Some(gid))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mut mode = meta.permissions().mode() & 0o7777;
        mode |= if read_only { 0o440 } else { 0o660 };
        if meta.is_dir() {
            mode |= 0o2000 | 0o110;
        }
        fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
        if meta.is_dir() {
            for entry in fs::read_dir(p)? {
                visit(&entry?.path(), gid, read_only)?;
            }
        }
        Ok(())
    }
    visit(dir, fs_group, read_only)
        .map_err(|e| VolumeError::io(format!("error applying ownership to {}", dir.display()), e))
}

/// Sets up a configMap / secret / downwardAPI / projected volume at `dir`:
/// the backing emptyDir (upstream uses `Memory` for all but configMap), then
/// the atomic write of `payload`, then fsGroup ownership of the whole
/// volume (these volumes are read-only to containers).
pub fn setup_projection_volume(
    dir: &Path,
    medium: Medium,
    size_limit: Option<u64>,
    payload: &Payload,
    mounter: &dyn Mounter,
    fs_group: Option<u32>,
) -> Result<(), VolumeError> {
    setup_empty_dir(dir, medium, size_limit, mounter)?;
    let writer = AtomicWriter::new(dir)?;
    match fs_group {
        None => writer.write(payload, None),
        Some(g) => {
            let perms = |_: &str| set_volume_ownership(dir, g, true);
            writer.write(payload, Some(&perms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::FileProjection;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use std::collections::BTreeMap;

    #[test]
    fn empty_dir_default_and_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::default();
        let d = tmp
            .path()
            .join("pods/u/volumes/kubernetes.io~empty-dir/cache");
        setup_empty_dir(&d, Medium::Default, None, &m).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o777
        );
        assert!(m.mounts.lock().unwrap().is_empty());

        let mem = tmp.path().join("mem");
        setup_empty_dir(&mem, Medium::Memory, Some(1 << 20), &m).unwrap();
        // A second setup does not mount twice.
        setup_empty_dir(&mem, Medium::Memory, Some(1 << 20), &m).unwrap();
        assert_eq!(
            *m.mounts.lock().unwrap(),
            vec![(mem.clone(), Some(1 << 20))]
        );
        teardown_empty_dir(&mem, &m).unwrap();
        assert!(m.mounts.lock().unwrap().is_empty());
        assert!(!mem.exists());
        teardown_empty_dir(&mem, &m).unwrap();
        assert!(matches!(
            Medium::parse(Some("HugePages")),
            Err(VolumeError::UnsupportedMedium(_))
        ));
        assert_eq!(Medium::parse(None).unwrap(), Medium::Default);
    }

    #[test]
    fn real_mounter_reads_mountinfo() {
        // "/" is a mount point everywhere; a fresh temp dir is not.
        assert!(CommandMounter.is_mounted(Path::new("/")).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("x");
        fs::create_dir(&sub).unwrap();
        assert!(!CommandMounter.is_mounted(&sub).unwrap());
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    fn pod_with_memory_limit(limit: Option<&str>) -> Pod {
        let limits = limit.map(|l| {
            BTreeMap::from([
                ("memory".to_string(), Q(l.into())),
                ("cpu".to_string(), Q("1".into())),
            ])
        });
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "a".into(),
                    resources: Some(ResourceRequirements {
                        requests: limits.clone(),
                        limits,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_volume_size() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        let alloc = q("8Gi");
        let none = pod_with_memory_limit(None);
        assert_eq!(
            empty_dir_memory_size(Some(&alloc), &none, None).unwrap(),
            Some(8 << 30)
        );
        let limited = pod_with_memory_limit(Some("1Gi"));
        assert_eq!(
            empty_dir_memory_size(Some(&alloc), &limited, None).unwrap(),
            Some(1 << 30)
        );
        assert_eq!(
            empty_dir_memory_size(Some(&alloc), &limited, Some(&q("64Mi"))).unwrap(),
            Some(64 << 20)
        );
        // A sizeLimit above what the pod may use is ignored.
        assert_eq!(
            empty_dir_memory_size(Some(&alloc), &limited, Some(&q("2Gi"))).unwrap(),
            Some(1 << 30)
        );
        assert_eq!(empty_dir_memory_size(None, &none, None).unwrap(), None);
    }

    #[test]
    fn projection_volume_with_fs_group() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let gid = fs::metadata(tmp.path()).unwrap().gid();
        let payload = Payload::from([(
            "key".to_string(),
            FileProjection {
                data: b"v".to_vec(),
                mode: 0o400,
                fs_user: None,
            },
        )]);
        let m = FakeMounter::default();
        setup_projection_volume(&dir, Medium::Memory, None, &payload, &m, Some(gid)).unwrap();
        assert_eq!(m.mounts.lock().unwrap().len(), 1);
        assert_eq!(fs::read_to_string(dir.join("key")).unwrap(), "v");
        // Group read added to the 0400 file; setgid on directories.
        let f = fs::metadata(dir.join("key")).unwrap();
        assert_eq!(f.permissions().mode() & 0o777, 0o440);
        assert_eq!(f.gid(), gid);
        let ts = fs::read_link(dir.join("..data")).unwrap();
        let d = fs::metadata(dir.join(ts)).unwrap().permissions().mode();
        assert_eq!(d & 0o2000, 0o2000);
    }
}
