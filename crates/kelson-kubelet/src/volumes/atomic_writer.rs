//! Upstream's `AtomicWriter` (pkg/volume/util/atomic_writer.go).
//!
//! Files live in a hidden timestamped directory `..<YYYY_MM_DD_hh_mm_ss>.<n>`;
//! `..data` is a symlink to it, and each top-level user-visible name is a
//! symlink into `..data`. An update writes a new timestamped directory and
//! swaps `..data` with one `rename(2)`, so readers see either the old or the
//! new set of files, never a mix. Names starting with `..` are reserved.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::VolumeError;

const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;
const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// One file to project: content, permission bits and an optional owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
    pub fs_user: Option<u32>,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

pub struct AtomicWriter {
    target_dir: PathBuf,
}

/// Extra ownership/permission step run on the new timestamped directory's
/// name before it goes live (upstream's `setPerms`).
pub type SetPerms<'a> = &'a dyn Fn(&str) -> Result<(), VolumeError>;

impl AtomicWriter {
    /// A writer for `target_dir`, which must exist.
    pub fn new(target_dir: &Path) -> Result<AtomicWriter, VolumeError> {
        fs::metadata(target_dir)
            .map_err(|e| VolumeError::io(format!("stat {}", target_dir.display()), e))?;
        Ok(AtomicWriter {
            target_dir: target_dir.to_path_buf(),
        })
    }

    /// Projects `payload` into the target directory (upstream `Write`):
    /// nothing is rewritten when contents are unchanged and no file went
    /// away, but the visible symlinks are always ensured.
    pub fn write(
        &self,
        payload: &Payload,
        set_perms: Option<SetPerms<'_>>,
    ) -> Result<(), VolumeError> {
        let clean = validate_payload(payload)?;
        let data_dir = self.target_dir.join(DATA_DIR_NAME);
        let mut old_ts = match fs::read_link(&data_dir) {
            Ok(p) => Some(p),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(VolumeError::io("error reading link for data directory", e)),
        };

        let mut to_remove = BTreeSet::new();
        let mut should_write = true;
        if let Some(old) = &old_ts {
            let old_path = self.target_dir.join(old);
            to_remove = paths_to_remove(&clean, &old_path)?;
            if !payload_differs(&clean, &old_path)? && to_remove.is_empty() {
                // Up to date; keep the data directory but still make sure
                // the visible symlinks exist.
                should_write = false;
                old_ts = None;
            }
        }

        if should_write {
            let ts_dir = self.new_timestamp_dir()?;
            let ts_name = file_name(&ts_dir);
            let staged = write_payload(&clean, &ts_dir)
                .and_then(|()| set_perms.map_or(Ok(()), |f| f(&ts_name)))
                .and_then(|()| self.swap_data_dir(&ts_name));
            if let Err(e) = staged {
                let _ = fs::remove_dir_all(&ts_dir);
                return Err(e);
            }
        }

        self.create_user_visible_files(&clean)?;
        self.remove_user_visible_paths(&to_remove)?;
        if let Some(old) = old_ts {
            let old_path = self.target_dir.join(old);
            fs::remove_dir_all(&old_path).map_err(|e| {
                VolumeError::io(
                    format!("error removing old data directory {}", old_path.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Points `..data` at `ts_name` atomically via `..data_tmp` + rename.
    fn swap_data_dir(&self, ts_name: &str) -> Result<(), VolumeError> {
        let tmp = self.target_dir.join(NEW_DATA_DIR_NAME);
        // A leftover from an interrupted write would make symlink fail.
        let _ = fs::remove_file(&tmp);
        symlink(ts_name, &tmp)
            .map_err(|e| VolumeError::io("error creating symbolic link for atomic update", e))?;
        if let Err(e) = fs::rename(&tmp, self.target_dir.join(DATA_DIR_NAME)) {
            let _ = fs::remove_file(&tmp);
            return Err(VolumeError::io(
                "error renaming symbolic link for data directory",
                e,
            ));
        }
        Ok(())
    }

    fn new_timestamp_dir(&self) -> Result<PathBuf, VolumeError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = timestamp_prefix(SystemTime::now());
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let suffix =
                (u64::from(std::process::id()) << 32 ^ u64::from(nanos) ^ n.wrapping_mul(7919))
                    % 10_000_000_000;
            let dir = self.target_dir.join(format!("{prefix}{suffix}"));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    // 0755 regardless of umask so group/other can traverse.
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| {
                        VolumeError::io("unable to set mode on new temp directory", e)
                    })?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(VolumeError::io("unable to create new temp directory", e)),
            }
        }
        Err(VolumeError::io(
            "unable to create new temp directory",
            io::Error::new(ErrorKind::AlreadyExists, "too many collisions"),
        ))
    }

    /// Links each top-level name to `..data/<name>` unless it exists.
    fn create_user_visible_files(&self, payload: &Payload) -> Result<(), VolumeError> {
        for path in payload.keys() {
            let first = path.split('/').next().unwrap_or(path);
            let visible = self.target_dir.join(first);
            match fs::read_link(&visible) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    symlink(Path::new(DATA_DIR_NAME).join(first), &visible).map_err(|e| {
                        VolumeError::io(
                            format!("error creating visible symlink {}", visible.display()),
                            e,
                        )
                    })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes stale top-level symlinks (deeper paths vanish with the old
    /// timestamped directory).
    fn remove_user_visible_paths(&self, paths: &BTreeSet<String>) -> Result<(), VolumeError> {
        let mut last = None;
        for p in paths.iter().filter(|p| !p.contains('/')) {
            if let Err(e) = fs::remove_file(self.target_dir.join(p)) {
                last = Some(VolumeError::io(
                    format!("error pruning old user-visible path {p}"),
                    e,
                ));
            }
        }
        last.map_or(Ok(()), Err)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Upstream `validatePath` on each key, then `filepath.Clean`.
fn validate_payload(payload: &Payload) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for (k, v) in payload {
        validate_path(k)?;
        out.insert(clean_path(k), v.clone());
    }
    Ok(out)
}

fn validate_path(p: &str) -> Result<(), VolumeError> {
    let bad = |m: String| Err(VolumeError::InvalidPath(m));
    if p.is_empty() {
        return bad("invalid path: must not be empty: \"\"".into());
    }
    if p.starts_with('/') {
        return bad(format!("invalid path: must be relative path: {p}"));
    }
    if p.len() > MAX_PATH_LENGTH {
        return bad(format!(
            "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
        ));
    }
    let items: Vec<&str> = p.split('/').collect();
    for item in &items {
        if *item == ".." {
            return bad(format!("invalid path: must not contain '..': {p}"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return bad(format!(
                "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return bad(format!("invalid path: must not start with '..': {p}"));
    }
    Ok(())
}

/// `filepath.Clean` for a validated relative path (no `..` elements).
fn clean_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Whether any file is missing from, or differs in, the old directory.
fn payload_differs(payload: &Payload, old: &Path) -> Result<bool, VolumeError> {
    for (path, f) in payload {
        let p = old.join(path);
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
            _ => {}
        }
        let on_disk =
            fs::read(&p).map_err(|e| VolumeError::io(format!("read {}", p.display()), e))?;
        if on_disk != f.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Relative paths in the old directory that the new payload no longer has
/// (its files and their parent directories are kept).
fn paths_to_remove(payload: &Payload, old: &Path) -> Result<BTreeSet<String>, VolumeError> {
    let mut existing = BTreeSet::new();
    match walk(old, "", &mut existing) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(VolumeError::io(
                "error determining user-visible files to remove",
                e,
            ))
        }
        Ok(()) => {}
    }
    let mut keep = BTreeSet::new();
    for file in payload.keys() {
        let mut p = file.as_str();
        loop {
            keep.insert(p.to_string());
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }
    Ok(existing.difference(&keep).cloned().collect())
}

/// Collects relative paths below `dir` without following symlinks.
fn walk(dir: &Path, rel: &str, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        out.insert(r.clone());
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &r, out)?;
        }
    }
    Ok(())
}

fn write_payload(payload: &Payload, dir: &Path) -> Result<(), VolumeError> {
    for (path, f) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                VolumeError::io(
                    format!("unable to create directory {}", parent.display()),
                    e,
                )
            })?;
        }
        let ctx = |what: &str| {
            format!(
                "unable to {what} file {} with mode {:o}",
                full.display(),
                f.mode
            )
        };
        fs::write(&full, &f.data).map_err(|e| VolumeError::io(ctx("write"), e))?;
        // Explicit chmod: the create mode is masked by the umask.
        fs::set_permissions(&full, fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(|e| VolumeError::io(ctx("change"), e))?;
        if let Some(uid) = f.fs_user {
            std::os::unix::fs::chown(&full, Some(uid), None).map_err(|e| {
                VolumeError::io(
                    format!("unable to change file {} with owner {uid}", full.display()),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

/// `..2006_01_02_15_04_05.` in UTC, as upstream's MkdirTemp pattern.
fn timestamp_prefix(t: SystemTime) -> String {
    // A clock outside jiff's range (years -9999..=9999) counts as the epoch.
    let t = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("..%Y_%m_%d_%H_%M_%S.").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
            fs_user: None,
        }
    }

    fn payload(v: &[(&str, &str)]) -> Payload {
        v.iter()
            .map(|(k, d)| (k.to_string(), file(d, 0o644)))
            .collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_symlinked_layout_and_updates_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let w = AtomicWriter::new(dir).unwrap();
        let mut p = payload(&[("a", "1"), ("sub/dir/b", "2"), ("./c", "3")]);
        p.get_mut("a").unwrap().mode = 0o400;
        w.write(&p, None).unwrap();

        let names = entries(dir);
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(names[0].starts_with("..20"), "{names:?}");
        assert_eq!(&names[1..], ["..data", "a", "c", "sub"]);
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(
            fs::read_link(dir.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(
            fs::read_link(dir.join("..data")).unwrap(),
            Path::new(&names[0])
        );
        assert_eq!(fs::read_to_string(dir.join("sub/dir/b")).unwrap(), "2");
        assert_eq!(fs::read_to_string(dir.join("c")).unwrap(), "3");
        let mode = fs::metadata(dir.join("a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let ts_mode = fs::metadata(dir.join(&names[0]))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(ts_mode, 0o755);

        // Same content: nothing is rewritten.
        w.write(&p, None).unwrap();
        assert_eq!(entries(dir), names);

        // Update: "c" and "sub" go away, "a" changes, "d" appears.
        let p2 = payload(&[("a", "new"), ("d", "4")]);
        w.write(&p2, None).unwrap();
        let names2 = entries(dir);
        assert_eq!(&names2[1..], ["..data", "a", "d"]);
        assert_ne!(names2[0], names[0], "old timestamped dir removed");
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "new");
        assert!(!dir.join(NEW_DATA_DIR_NAME).exists());
    }

    #[test]
    fn recreates_missing_visible_links_without_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path()).unwrap();
        let p = payload(&[("k", "v")]);
        w.write(&p, None).unwrap();
        let ts = fs::read_link(tmp.path().join(DATA_DIR_NAME)).unwrap();
        fs::remove_file(tmp.path().join("k")).unwrap();
        w.write(&p, None).unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("k")).unwrap(), "v");
        assert_eq!(fs::read_link(tmp.path().join(DATA_DIR_NAME)).unwrap(), ts);
    }

    #[test]
    fn set_perms_sees_new_dir_and_failure_rolls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path()).unwrap();
        let seen = std::cell::RefCell::new(String::new());
        let ok = |name: &str| -> Result<(), VolumeError> {
            *seen.borrow_mut() = name.to_string();
            Ok(())
        };
        w.write(&payload(&[("k", "v")]), Some(&ok)).unwrap();
        let link = fs::read_link(tmp.path().join(DATA_DIR_NAME)).unwrap();
        assert_eq!(Path::new(&*seen.borrow()), link);

        let fail = |_: &str| -> Result<(), VolumeError> { Err(VolumeError::Source("boom".into())) };
        let err = w
            .write(&payload(&[("k", "changed")]), Some(&fail))
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        // The old data stays live and the half-written dir is gone.
        assert_eq!(fs::read_to_string(tmp.path().join("k")).unwrap(), "v");
        assert_eq!(entries(tmp.path()).len(), 3);
    }

    #[test]
    fn path_validation_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path()).unwrap();
        let err = |k: &str| {
            w.write(&payload(&[(k, "x")]), None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(""), "invalid path: must not be empty: \"\"");
        assert_eq!(err("/abs"), "invalid path: must be relative path: /abs");
        assert_eq!(err("a/../b"), "invalid path: must not contain '..': a/../b");
        assert_eq!(
            err("..data"),
            "invalid path: must not start with '..': ..data"
        );
        assert_eq!(
            err(&"x".repeat(256)),
            "invalid path: filenames must be less than or equal to 255 characters"
        );
        assert_eq!(
            err(&"a/".repeat(2100)),
            "invalid path: must be less than or equal to 4096 characters"
        );
        // Nothing was written.
        assert!(entries(tmp.path()).is_empty());
        assert!(AtomicWriter::new(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn timestamp_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_454_339_045); // 2016-02-01 15:04:05 UTC
        assert_eq!(timestamp_prefix(t), "..2016_02_01_15_04_05.");
        let t = UNIX_EPOCH + Duration::from_millis(951_868_799_999); // leap day, last ms
        assert_eq!(timestamp_prefix(t), "..2000_02_29_23_59_59.");
        assert_eq!(timestamp_prefix(UNIX_EPOCH), "..1970_01_01_00_00_00.");
    }
}
