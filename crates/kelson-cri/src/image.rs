//! A small OCI image archive writer.
//!
//! Builds single-layer images (uncompressed layer) from in-memory files, as an
//! OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`),
//! which `ctr images import` reads. The manifest carries containerd's
//! `io.containerd.image.name` annotation with the fully normalised reference
//! (e.g. `docker.io/library/busybox:1`), so the image imports under the name
//! the CRI looks up, plus the OCI `org.opencontainers.image.ref.name` tag.
//!
//! Everything is deterministic (zero mtimes, root ownership, sorted entries),
//! so the same input gives the same digests.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// containerd's annotation for the full image name in an OCI index.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The PATH docker and containerd give images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Busybox applets linked into [`busybox_image`]'s `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "[", "ash", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dd", "df",
    "dirname", "du", "echo", "env", "expr", "false", "find", "grep", "head", "hostname", "httpd",
    "id", "ifconfig", "ip", "kill", "ln", "ls", "mkdir", "mount", "mv", "nc", "nslookup", "ping",
    "printf", "ps", "pwd", "readlink", "rm", "rmdir", "sed", "seq", "sh", "sleep", "sort", "stat",
    "tail", "tar", "tee", "test", "timeout", "touch", "tr", "true", "umount", "uname", "uniq",
    "usleep", "vi", "wc", "wget", "whoami", "xargs", "yes",
];

/// Where Debian's busybox-static puts the binary (`/bin` is a link to
/// `/usr/bin` on merged-/usr systems).
const HOST_BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid path {0:?} in image: must be relative to / without '..'")]
    InvalidPath(String),
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    #[error("{path} is both {first} and {second}")]
    Conflict {
        path: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("no busybox binary on this host (looked at {0:?}); install busybox-static")]
    NoBusybox(&'static [&'static str]),
    #[error("writing the image archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding image JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Debug)]
enum Entry {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::File { .. } => "a file",
            Entry::Dir { .. } => "a directory",
            Entry::Symlink { .. } => "a symlink",
        }
    }
}

/// Builds a one-layer image archive.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    name: String,
    /// Paths as given (validated at build time so the builder can chain).
    entries: Vec<(String, Entry)>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// `name` is an image reference such as `busybox:1` or
    /// `kelson.dev/pause:1`; without a tag it gets `:latest`.
    pub fn new(name: impl Into<String>) -> Self {
        ImageBuilder {
            name: name.into(),
            entries: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
        }
    }

    /// A regular file (`path` relative to the image root, a leading `/` is
    /// accepted); missing parent directories are added with mode 0755.
    pub fn file(mut self, path: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entries.push((
            path.into(),
            Entry::File {
                data: data.into(),
                mode,
            },
        ));
        self
    }

    pub fn dir(mut self, path: impl Into<String>, mode: u32) -> Self {
        self.entries.push((path.into(), Entry::Dir { mode }));
        self
    }

    pub fn symlink(mut self, path: impl Into<String>, target: impl Into<String>) -> Self {
        self.entries.push((
            path.into(),
            Entry::Symlink {
                target: target.into(),
            },
        ));
        self
    }

    pub fn entrypoint<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds `KEY=value` to the image environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The reference the archive imports under (normalised like the CRI
    /// does, e.g. `busybox:1` → `docker.io/library/busybox:1`).
    pub fn reference(&self) -> Result<String, ImageError> {
        normalize_reference(&self.name)
    }

    /// The layer tar: every entry under its normalised path, parents first.
    fn layer(&self) -> Result<Vec<u8>, ImageError> {
        let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
        for (raw, entry) in &self.entries {
            let path = clean_path(raw)?;
            // Parent directories, unless given explicitly.
            let mut parent = String::new();
            for part in path
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map(|(_, p)| p)
                .unwrap_or(&[])
            {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(part);
                match tree.get(&parent) {
                    None => {
                        tree.insert(parent.clone(), Entry::Dir { mode: 0o755 });
                    }
                    Some(Entry::Dir { .. }) => {}
                    Some(other) => {
                        return Err(ImageError::Conflict {
                            path: parent.clone(),
                            first: other.kind(),
                            second: "a directory",
                        })
                    }
                }
            }
            match (tree.get(&path), entry) {
                // An explicit directory overrides an implied one's mode.
                (Some(Entry::Dir { .. }), Entry::Dir { .. }) | (None, _) => {
                    tree.insert(path, entry.clone());
                }
                (Some(existing), _) => {
                    return Err(ImageError::Conflict {
                        path,
                        first: existing.kind(),
                        second: entry.kind(),
                    })
                }
            }
        }

        let mut out = tar::Builder::new(Vec::new());
        // BTreeMap order puts "a" before "a/b": parents precede children.
        for (path, entry) in &tree {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match entry {
                Entry::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    out.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    out.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    out.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(out.into_inner()?)
    }

    /// The whole OCI archive in memory.
    pub fn build(&self) -> Result<Vec<u8>, ImageError> {
        let reference = self.reference()?;
        let tag = reference
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| "latest".into());
        let layer = self.layer()?;
        let layer_digest = sha256(&layer);

        let mut config = serde_json::Map::new();
        if let Some(e) = &self.entrypoint {
            config.insert("Entrypoint".into(), e.clone().into());
        }
        if let Some(c) = &self.cmd {
            config.insert("Cmd".into(), c.clone().into());
        }
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_string());
        }
        config.insert("Env".into(), env.into());
        if let Some(w) = &self.working_dir {
            config.insert("WorkingDir".into(), w.clone().into());
        }
        if let Some(u) = &self.user {
            config.insert("User".into(), u.clone().into());
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), serde_json::to_value(&self.labels)?);
        }
        let image_config = serde_json::json!({
            "architecture": host_architecture(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.clone()]},
            "history": [{"created_by": "kelson-cri ImageBuilder"}],
        });
        let config_bytes = serde_json::to_vec(&image_config)?;
        let config_digest = sha256(&config_bytes);

        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_bytes.len()},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer.len()}],
        });
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = sha256(&manifest_bytes);

        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [{
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_bytes.len(),
                "platform": {"architecture": host_architecture(), "os": "linux"},
                "annotations": {
                    ANNOTATION_IMAGE_NAME: reference,
                    ANNOTATION_REF_NAME: tag,
                },
            }],
        });
        let index_bytes = serde_json::to_vec(&index)?;

        let mut out = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| -> std::io::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_size(data.len() as u64);
            out.append_data(&mut header, path, data)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json", &index_bytes)?;
        for (digest, data) in [
            (&layer_digest, &layer),
            (&config_digest, &config_bytes),
            (&manifest_digest, &manifest_bytes),
        ] {
            let hex = digest.trim_start_matches("sha256:");
            add(&format!("blobs/sha256/{hex}"), data)?;
        }
        Ok(out.into_inner()?)
    }

    /// Writes the archive to `path`.
    pub fn write_tar(&self, path: &Path) -> Result<(), ImageError> {
        let bytes = self.build()?;
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// OCI architecture name of this host.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Relative, slash-separated, no `.`/`..`/empty components.
fn clean_path(raw: &str) -> Result<String, ImageError> {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(ImageError::InvalidPath(raw.to_string()));
    }
    Ok(parts.join("/"))
}

/// Normalises an image reference the way containerd's CRI does (docker
/// reference rules): a first component without `.` or `:` that is not
/// `localhost` means Docker Hub (`docker.io/`), a single-component Docker Hub
/// name lives under `library/`, and a missing tag is `latest`. Digest
/// references are rejected: an archive we build is named by tag.
pub fn normalize_reference(name: &str) -> Result<String, ImageError> {
    let bad = || ImageError::InvalidReference(name.to_string());
    if name.is_empty() || name.contains('@') || name.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    // The tag is after the last ':' of the path part (the domain may carry a
    // port, which is already split off).
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p.to_string(), t.to_string()),
        _ => (rest.clone(), "latest".to_string()),
    };
    let path_ok = !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
        && !tag.starts_with(['.', '-']);
    if !path_ok || !tag_ok {
        return Err(bad());
    }
    Ok(format!("{domain}/{path}:{tag}"))
}

/// A test image from the host's static busybox: `/bin/busybox`, a link per
/// applet in [`BUSYBOX_APPLETS`], `/tmp`, `/etc/passwd` and `/etc/group`
/// with root and nobody, `CMD ["sh"]`.
pub fn busybox_image(name: &str) -> Result<Vec<u8>, ImageError> {
    let binary = HOST_BUSYBOX
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or(ImageError::NoBusybox(HOST_BUSYBOX))?;
    let mut image = ImageBuilder::new(name)
        .file("bin/busybox", binary, 0o755)
        .dir("tmp", 0o1777)
        .dir("root", 0o700)
        .dir("var/www", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("dev", 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
        .cmd(["sh"]);
    for applet in BUSYBOX_APPLETS {
        image = image.symlink(format!("bin/{applet}"), "busybox");
    }
    image.build()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// Reads one file out of a tar archive.
    pub(crate) fn archive_file(tar_bytes: &[u8], name: &str) -> Option<Vec<u8>> {
        let mut archive = tar::Archive::new(tar_bytes);
        for entry in archive.entries().ok()? {
            let mut entry = entry.ok()?;
            if entry.path().ok()?.to_str()? == name {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).ok()?;
                return Some(data);
            }
        }
        None
    }

    fn json(tar: &[u8], name: &str) -> serde_json::Value {
        serde_json::from_slice(&archive_file(tar, name).expect(name)).expect("json")
    }

    fn blob(tar: &[u8], digest: &serde_json::Value) -> Vec<u8> {
        let hex = digest
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        archive_file(tar, &format!("blobs/sha256/{hex}")).expect("blob")
    }

    #[test]
    fn normalizes_like_docker_references() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1", "docker.io/library/busybox:1"),
            ("kelson/busybox:1", "docker.io/kelson/busybox:1"),
            ("kelson.dev/pause:1", "kelson.dev/pause:1"),
            ("localhost/x", "localhost/x:latest"),
            ("127.0.0.1:5000/a/b:v2", "127.0.0.1:5000/a/b:v2"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
        ] {
            assert_eq!(normalize_reference(input).expect(input), want, "{input}");
        }
        for bad in ["", "Busybox", "a b", "x@sha256:00", "x:", "x:-a", "/x"] {
            assert!(normalize_reference(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn archive_is_a_consistent_oci_layout() {
        let build = || {
            ImageBuilder::new("demo:2")
                .file("/usr/bin/hello", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
                .symlink("bin/hi", "/usr/bin/hello")
                .dir("data", 0o700)
                .entrypoint(["/usr/bin/hello"])
                .cmd(["a"])
                .env("FOO", "bar")
                .working_dir("/data")
                .user("65534")
                .build()
                .expect("build")
        };
        let tar = build();
        assert_eq!(json(&tar, "oci-layout")["imageLayoutVersion"], "1.0.0");
        let index = json(&tar, "index.json");
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"][ANNOTATION_IMAGE_NAME],
            "docker.io/library/demo:2"
        );
        assert_eq!(desc["annotations"][ANNOTATION_REF_NAME], "2");
        let manifest_bytes = blob(&tar, &desc["digest"]);
        assert_eq!(sha256(&manifest_bytes), desc["digest"]);
        assert_eq!(desc["size"], manifest_bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("json");
        let config_bytes = blob(&tar, &manifest["config"]["digest"]);
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).expect("json");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/usr/bin/hello"])
        );
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["a"]));
        assert_eq!(
            config["config"]["Env"],
            serde_json::json!([DEFAULT_PATH, "FOO=bar"])
        );
        assert_eq!(config["config"]["WorkingDir"], "/data");
        assert_eq!(config["config"]["User"], "65534");
        // Uncompressed layer: its digest is also the diff ID.
        let layer_digest = &manifest["layers"][0]["digest"];
        assert_eq!(&config["rootfs"]["diff_ids"][0], layer_digest);
        let layer = blob(&tar, layer_digest);
        let mut archive = tar::Archive::new(layer.as_slice());
        let entries: Vec<(String, tar::EntryType, u32)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().expect("mode"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin/".into(), tar::EntryType::Directory, 0o755),
                ("bin/hi".into(), tar::EntryType::Symlink, 0o777),
                ("data/".into(), tar::EntryType::Directory, 0o700),
                ("usr/".into(), tar::EntryType::Directory, 0o755),
                ("usr/bin/".into(), tar::EntryType::Directory, 0o755),
                ("usr/bin/hello".into(), tar::EntryType::Regular, 0o755),
            ]
        );
        // Deterministic.
        assert_eq!(tar, build());
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let err = ImageBuilder::new("x")
            .file("../etc/passwd", b"".to_vec(), 0o644)
            .build();
        assert!(matches!(err, Err(ImageError::InvalidPath(_))), "{err:?}");
        let err = ImageBuilder::new("x")
            .file("/", b"".to_vec(), 0o644)
            .build();
        assert!(matches!(err, Err(ImageError::InvalidPath(_))), "{err:?}");
        let err = ImageBuilder::new("x")
            .file("a", b"".to_vec(), 0o644)
            .file("a/b", b"".to_vec(), 0o644)
            .build();
        assert!(matches!(err, Err(ImageError::Conflict { .. })), "{err:?}");
        let err = ImageBuilder::new("x")
            .file("a", b"".to_vec(), 0o644)
            .symlink("a", "b")
            .build();
        assert!(matches!(err, Err(ImageError::Conflict { .. })), "{err:?}");
    }

    #[test]
    fn busybox_image_has_the_applets() {
        let Ok(tar) = busybox_image("busybox:test") else {
            // Hosts without busybox-static: nothing to check.
            assert!(HOST_BUSYBOX.iter().all(|p| !Path::new(p).exists()));
            return;
        };
        let index = json(&tar, "index.json");
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(&tar, &index["manifests"][0]["digest"])).expect("json");
        let layer = blob(&tar, &manifest["layers"][0]["digest"]);
        let mut archive = tar::Archive::new(layer.as_slice());
        let mut links = Vec::new();
        for e in archive.entries().expect("entries") {
            let e = e.expect("entry");
            if e.header().entry_type() == tar::EntryType::Symlink {
                links.push(e.path().expect("path").to_string_lossy().into_owned());
            }
        }
        for applet in ["sh", "httpd", "nc", "sleep", "wget", "mkdir"] {
            assert!(links.contains(&format!("bin/{applet}")), "{applet}");
        }
    }
}
