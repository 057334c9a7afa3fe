//! What pods that are gone left on the host (upstream's
//! `cleanupOrphanedPodDirs` and `cleanupOrphanedPodCgroups`): their
//! directories under `<root>/pods` and their cgroups under the pod cgroup
//! root, in every cgroup hierarchy.
//!
//! "Known" pods are those the API server or the runtime still has: the
//! caller passes both, so nothing of a pod with containers is removed.

use std::collections::HashSet;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::volumes::Mounter;

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A mount below the pod directory would not go away; the directory is
    /// kept so nothing behind the mount is deleted.
    #[error("orphaned pod directory {} still has mounts: {}", .dir.display(), join(.mounts))]
    StillMounted { dir: PathBuf, mounts: Vec<PathBuf> },
    /// Several pod directories failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CleanupError>),
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> CleanupError {
    move |source| CleanupError::Io { context, source }
}

/// The pod directories under `<root>/pods` whose UID is not in
/// `known_uids`, sorted.
pub fn orphaned_pod_dirs(root: &Path, known_uids: &HashSet<String>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root.join("pods")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !known_uids.contains(e.file_name().to_string_lossy().as_ref()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Unmounts everything mounted below `dir` (tmpfs of memory-backed
/// volumes, any bind mount), then removes the directory. If a mount
/// survives, nothing is removed: deleting through it would delete what it
/// shows.
pub fn remove_pod_dir(dir: &Path, mounter: &dyn Mounter) -> Result<(), CleanupError> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let mut stuck = Vec::new();
    unmount_below(dir, mounter, &mut stuck)?;
    if !stuck.is_empty() {
        return Err(CleanupError::StillMounted {
            dir: dir.to_path_buf(),
            mounts: stuck,
        });
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", dir.display()))(e)),
    }
}

/// Depth-first: a mounted directory (or file) is unmounted, stacked mounts
/// included, and not descended into; symlinks are not followed.
fn unmount_below(
    path: &Path,
    mounter: &dyn Mounter,
    stuck: &mut Vec<PathBuf>,
) -> Result<(), CleanupError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("stat {}", path.display()))(e)),
    };
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    // Bounded: a mount that keeps reappearing is reported, not looped on.
    for _ in 0..8 {
        match mounter.is_mounted(path) {
            Ok(false) => break,
            Ok(true) => {
                if let Err(e) = mounter.unmount(path) {
                    tracing::warn!(path = %path.display(), error = %e, "unmount failed");
                    stuck.push(path.to_path_buf());
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(format!("check mount of {}", path.display()))(e)),
        }
    }
    if mounter.is_mounted(path).unwrap_or(true) {
        stuck.push(path.to_path_buf());
        return Ok(());
    }
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(io_err(format!("read {}", path.display())))?;
        for e in entries {
            let e = e.map_err(io_err(format!("read {}", path.display())))?;
            let child = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            // Only bind mounts of single files matter below directories of
            // files; checking every file of a big volume would be slow, so
            // files are checked where subPath mounts live.
            if is_dir || is_under_subpaths(&child) {
                unmount_below(&child, mounter, stuck)?;
            }
        }
    }
    Ok(())
}

fn is_under_subpaths(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == "volume-subpaths")
}

/// Removes every orphaned pod directory (see [`orphaned_pod_dirs`] and
/// [`remove_pod_dir`]); returns those removed. Failures of some do not stop
/// the others; they are reported together.
pub fn remove_orphaned_pod_dirs(
    root: &Path,
    known_uids: &HashSet<String>,
    mounter: &dyn Mounter,
) -> Result<Vec<PathBuf>, CleanupError> {
    let mut removed = Vec::new();
    let mut errs = Vec::new();
    for dir in orphaned_pod_dirs(root, known_uids) {
        match remove_pod_dir(&dir, mounter) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed orphaned pod directory");
                removed.push(dir);
            }
            Err(e) => errs.push(e),
        }
    }
    match errs.len() {
        0 => Ok(removed),
        1 => Err(errs.remove(0)),
        _ => Err(CleanupError::Several(errs)),
    }
}

/// The cgroup filesystem, behind a trait so tests need no cgroups.
pub trait CgroupFs: Send + Sync {
    /// The hierarchies' mount points: every cgroup v1 controller directory
    /// (`/sys/fs/cgroup/cpu`, `memory`...), or the single v2 root.
    fn hierarchies(&self) -> io::Result<Vec<PathBuf>>;
    /// Child cgroups (directories) of `dir`, by name.
    fn children(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether processes are still in the cgroup itself.
    fn has_processes(&self, dir: &Path) -> io::Result<bool>;
    /// Removes an empty cgroup (`rmdir`).
    fn remove(&self, dir: &Path) -> io::Result<()>;
}

/// The host's cgroups under `mount_root` (normally `/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct HostCgroupFs {
    pub mount_root: PathBuf,
}

impl Default for HostCgroupFs {
    fn default() -> Self {
        HostCgroupFs {
            mount_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl CgroupFs for HostCgroupFs {
    fn hierarchies(&self) -> io::Result<Vec<PathBuf>> {
        if self.mount_root.join("cgroup.controllers").exists() {
            return Ok(vec![self.mount_root.clone()]);
        }
        let mut out: Vec<PathBuf> = fs::read_dir(&self.mount_root)?
            .flatten()
            // Controller co-mounts appear as symlinks (cpu -> cpu,cpuacct).
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }

    fn children(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        out.sort();
        Ok(out)
    }

    fn has_processes(&self, dir: &Path) -> io::Result<bool> {
        let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
        Ok(procs.lines().any(|l| !l.trim().is_empty()))
    }

    fn remove(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }
}

/// An in-memory cgroup tree for tests: cgroups by absolute path, with
/// whether processes are in them.
#[derive(Debug, Default)]
pub struct FakeCgroupFs {
    pub hierarchies: Vec<PathBuf>,
    pub cgroups: Mutex<Vec<(PathBuf, bool)>>,
}

impl FakeCgroupFs {
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Vec<(PathBuf, bool)>>> {
        self.cgroups
            .lock()
            .map_err(|_| io::Error::other("poisoned"))
    }

    /// Whether the cgroup at `path` exists.
    pub fn exists(&self, path: &Path) -> bool {
        self.lock()
            .map(|c| c.iter().any(|(p, _)| p == path))
            .unwrap_or(false)
    }
}

impl CgroupFs for FakeCgroupFs {
    fn hierarchies(&self) -> io::Result<Vec<PathBuf>> {
        Ok(self.hierarchies.clone())
    }

    fn children(&self, dir: &Path) -> io::Result<Vec<String>> {
        let c = self.lock()?;
        if !self.hierarchies.iter().any(|h| h == dir) && !c.iter().any(|(p, _)| p == dir) {
            return Err(io::Error::new(ErrorKind::NotFound, "no such cgroup"));
        }
        let mut out: Vec<String> = c
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        out.sort();
        Ok(out)
    }

    fn has_processes(&self, dir: &Path) -> io::Result<bool> {
        Ok(self.lock()?.iter().any(|(p, busy)| p == dir && *busy))
    }

    fn remove(&self, dir: &Path) -> io::Result<()> {
        let mut c = self.lock()?;
        if c.iter().any(|(p, _)| p.parent() == Some(dir)) {
            return Err(io::Error::new(ErrorKind::DirectoryNotEmpty, "has children"));
        }
        if c.iter().any(|(p, busy)| p == dir && *busy) {
            return Err(io::Error::new(ErrorKind::ResourceBusy, "has processes"));
        }
        let before = c.len();
        c.retain(|(p, _)| p != dir);
        if c.len() == before {
            return Err(io::Error::new(ErrorKind::NotFound, "no such cgroup"));
        }
        Ok(())
    }
}

/// What a cgroup cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupCleanup {
    /// Pod cgroups removed (one entry per hierarchy).
    pub removed: Vec<PathBuf>,
    /// Pod cgroups left because processes remain in them (or below), or
    /// removal failed.
    pub busy: Vec<PathBuf>,
}

/// Pod cgroups are `pod<uid>` directly under the root (Guaranteed) or under
/// its `burstable` / `besteffort` children.
fn pod_cgroups(fs: &dyn CgroupFs, root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut scan = |dir: &Path| {
        for name in fs.children(dir).unwrap_or_default() {
            if let Some(uid) = name.strip_prefix("pod") {
                out.push((dir.join(&name), uid.to_string()));
            }
        }
    };
    scan(root);
    for qos in ["burstable", "besteffort"] {
        scan(&root.join(qos));
    }
    out
}

/// `cgroup_root` ("/kubepods") inside a hierarchy.
fn under(hierarchy: &Path, cgroup_root: &str) -> PathBuf {
    let rel = cgroup_root.trim_start_matches('/');
    if rel.is_empty() {
        hierarchy.to_path_buf()
    } else {
        hierarchy.join(rel)
    }
}

/// Removes the cgroups of pods not in `known_uids` from every hierarchy,
/// depth first (container cgroups, then the pod's). A cgroup that still
/// holds processes is left, as is everything above it, and reported.
pub fn remove_orphaned_pod_cgroups(
    fs: &dyn CgroupFs,
    cgroup_root: &str,
    known_uids: &HashSet<String>,
) -> CgroupCleanup {
    let mut report = CgroupCleanup::default();
    let hierarchies = match fs.hierarchies() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "listing cgroup hierarchies");
            return report;
        }
    };
    for h in hierarchies {
        let root = under(&h, cgroup_root);
        for (path, uid) in pod_cgroups(fs, &root) {
            if known_uids.contains(&uid) {
                continue;
            }
            if remove_tree(fs, &path) {
                report.removed.push(path);
            } else {
                report.busy.push(path);
            }
        }
    }
    report
}

/// Depth-first rmdir; false when something had to stay.
fn remove_tree(fs: &dyn CgroupFs, dir: &Path) -> bool {
    let mut all_gone = true;
    for child in fs.children(dir).unwrap_or_default() {
        all_gone &= remove_tree(fs, &dir.join(child));
    }
    if !all_gone {
        return false;
    }
    if fs.has_processes(dir).unwrap_or(false) {
        tracing::warn!(cgroup = %dir.display(), "orphaned pod cgroup still has processes");
        return false;
    }
    match fs.remove(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(cgroup = %dir.display(), error = %e, "removing orphaned pod cgroup");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::FakeMounter;

    fn known(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pod_dirs_of_gone_pods_are_removed_after_unmounting() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for uid in ["alive", "gone-1", "gone-2"] {
            fs::create_dir_all(root.join("pods").join(uid).join("volumes")).unwrap();
        }
        let shm = root.join("pods/gone-1/volumes/kubernetes.io~empty-dir/shm");
        fs::create_dir_all(&shm).unwrap();
        fs::write(shm.join("f"), "x").unwrap();
        let m = FakeMounter::default();
        m.mount_tmpfs(&shm, None).unwrap();

        let orphans = orphaned_pod_dirs(root, &known(&["alive"]));
        assert_eq!(
            orphans,
            vec![root.join("pods/gone-1"), root.join("pods/gone-2")]
        );
        let removed = remove_orphaned_pod_dirs(root, &known(&["alive"]), &m).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(m.mounts.lock().unwrap().is_empty());
        assert!(root.join("pods/alive").is_dir());
        assert!(!root.join("pods/gone-1").exists());
        assert!(orphaned_pod_dirs(&root.join("nowhere"), &known(&[])).is_empty());
    }

    /// A mounter whose unmounts fail: the directory must stay.
    struct StuckMounter(PathBuf);

    impl Mounter for StuckMounter {
        fn mount_tmpfs(&self, _: &Path, _: Option<u64>) -> io::Result<()> {
            Ok(())
        }
        fn unmount(&self, _: &Path) -> io::Result<()> {
            Err(io::Error::other("device busy"))
        }
        fn is_mounted(&self, p: &Path) -> io::Result<bool> {
            Ok(p == self.0)
        }
    }

    #[test]
    fn a_surviving_mount_keeps_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let bind = tmp.path().join("pods/p/volume-subpaths/v/c/0");
        fs::create_dir_all(bind.parent().unwrap()).unwrap();
        fs::write(&bind, "host file").unwrap();
        let m = StuckMounter(bind.clone());
        let err = remove_orphaned_pod_dirs(tmp.path(), &known(&[]), &m).unwrap_err();
        assert!(matches!(err, CleanupError::StillMounted { .. }), "{err}");
        assert!(bind.exists());
    }

    #[test]
    fn pod_cgroups_go_depth_first_in_every_hierarchy() {
        let h = |n: &str| PathBuf::from("/cg").join(n);
        let fs = FakeCgroupFs {
            hierarchies: vec![h("cpu"), h("memory")],
            ..Default::default()
        };
        {
            let mut c = fs.cgroups.lock().unwrap();
            for hier in ["cpu", "memory"] {
                let base = h(hier).join("kubepods");
                c.push((base.clone(), false));
                c.push((base.join("burstable"), false));
                c.push((base.join("besteffort"), false));
                c.push((base.join("podalive"), false));
                c.push((base.join("burstable/podgone"), false));
                c.push((base.join("burstable/podgone/ctr1"), false));
                c.push((base.join("besteffort/podbusy"), false));
                c.push((base.join("besteffort/podbusy/ctr"), hier == "memory"));
            }
        }
        let r = remove_orphaned_pod_cgroups(&fs, "/kubepods", &known(&["alive"]));
        assert_eq!(
            r.removed,
            vec![
                h("cpu").join("kubepods/burstable/podgone"),
                h("cpu").join("kubepods/besteffort/podbusy"),
                h("memory").join("kubepods/burstable/podgone"),
            ]
        );
        assert_eq!(
            r.busy,
            vec![h("memory").join("kubepods/besteffort/podbusy")]
        );
        assert!(fs.exists(&h("memory").join("kubepods/podalive")));
        assert!(!fs.exists(&h("cpu").join("kubepods/burstable/podgone/ctr1")));
        assert!(fs.exists(&h("memory").join("kubepods/burstable")));
    }

    #[test]
    fn host_cgroups_list_directories() {
        // A plain directory tree stands in for a v1 mount root.
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("memory/kubepods/podx")).unwrap();
        fs::create_dir_all(tmp.path().join("cpu")).unwrap();
        let host = HostCgroupFs {
            mount_root: tmp.path().to_path_buf(),
        };
        assert_eq!(
            host.hierarchies().unwrap(),
            vec![tmp.path().join("cpu"), tmp.path().join("memory")]
        );
        let r = remove_orphaned_pod_cgroups(&host, "/kubepods", &known(&[]));
        assert_eq!(r.removed, vec![tmp.path().join("memory/kubepods/podx")]);
        assert!(tmp.path().join("memory/kubepods").is_dir());
    }
}
