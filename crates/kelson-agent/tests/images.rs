//! `kelson images import` against a real containerd (needs root,
//! containerd and ctr): a busybox archive is imported into a data dir whose
//! containerd is not running, so a temporary one is started and stopped;
//! then containerd is started on that data dir again and the CRI must list
//! the image.

use kelson_agent::images::{self, agent_dir};
use kelson_cri::api::{ImageSpec, ImageStatusRequest, ListImagesRequest};
use kelson_cri::containerd::{Containerd, ContainerdOptions};
use kelson_cri::{image, Cri};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "kelson.dev/agent-import-busybox:1";

/// Whether the test can run; says why not when it cannot.
fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipped: needs root (containerd)");
        return false;
    }
    for tool in ["containerd", "ctr"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            eprintln!("skipped: {tool} is not installed");
            return false;
        }
    }
    true
}

/// PIDs of live processes with `needle` in their command line (other than
/// this test process).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Zombies are gone for our purposes.
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Everything the test made, removed on drop (also after a failed
/// assertion).
struct Guard {
    rt: tokio::runtime::Runtime,
    dir: Option<tempfile::TempDir>,
    containerd: Option<Containerd>,
    preexisting_run_containerd: bool,
}

impl Guard {
    fn data_dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }
}

/// Removes `dir` and the empty directories under it; keeps anything with
/// files.
fn remove_empty_dirs(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !(is_dir && remove_empty_dirs(&e.path())) {
            empty = false;
        }
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.containerd.take() {
            let _ = self.rt.block_on(c.stop());
        }
        // A containerd the import started and a panic left behind: by PID
        // (its config path is under our temp dir).
        let dir = self.data_dir().to_string_lossy().into_owned();
        if !dir.is_empty() {
            for pid in processes_mentioning(&dir) {
                eprintln!("cleanup: killing leftover pid {pid}");
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if !self.preexisting_run_containerd {
            remove_empty_dirs(Path::new("/run/containerd"));
        }
        if let Some(d) = self.dir.take() {
            let path = d.path().to_path_buf();
            if let Err(e) = d.close() {
                eprintln!("cleanup: removing {}: {e}", path.display());
            }
        }
    }
}

type TestResult<T> = Result<T, Box<dyn std::error::Error>>;

async fn cri_knows(cri: &mut Cri, name: &str) -> TestResult<bool> {
    let status = cri
        .images()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    Ok(status.image.is_some())
}

#[test]
fn import_with_a_temporary_containerd() {
    if !can_run() {
        return;
    }
    let mut guard = Guard {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime"),
        // Short path: the containerd socket stays inside the data dir.
        dir: Some(
            tempfile::Builder::new()
                .prefix("kagt")
                .tempdir_in("/tmp")
                .expect("tempdir"),
        ),
        containerd: None,
        preexisting_run_containerd: Path::new("/run/containerd").exists(),
    };
    let data_dir = guard.data_dir();
    let archive = data_dir.join("busybox.tar");
    std::fs::write(
        &archive,
        image::busybox_image(BUSYBOX).expect("busybox image"),
    )
    .expect("write archive");

    // 1. No containerd runs on the data dir: a temporary one imports.
    let names = guard
        .rt
        .block_on(images::import(&data_dir, &archive))
        .expect("import");
    assert_eq!(names, vec![BUSYBOX.to_string()]);
    // ... and is gone afterwards.
    let dir = data_dir.to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&dir).is_empty(),
        "the temporary containerd is still running"
    );
    let socket = images::containerd_paths(&data_dir).socket;
    assert!(!guard.rt.block_on(images::answering(&socket)));

    // 2. The node's containerd, started later on that data dir, has it.
    let containerd = guard
        .rt
        .block_on(Containerd::start(ContainerdOptions::new(agent_dir(
            &data_dir,
        ))))
        .expect("containerd starts");
    assert_eq!(containerd.socket(), socket);
    guard.containerd = Some(containerd);
    let listed: TestResult<Vec<String>> = guard.rt.block_on(async {
        let mut cri = Cri::connect(&socket).await?;
        // The CRI plugin loads the image store at start; allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cri_knows(&mut cri, BUSYBOX).await? {
            if Instant::now() > deadline {
                return Err(format!("{BUSYBOX} never visible to the CRI").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let list = cri
            .images()
            .list_images(ListImagesRequest { filter: None })
            .await?
            .into_inner();
        Ok(list.images.into_iter().flat_map(|i| i.repo_tags).collect())
    });
    let listed = listed.expect("CRI image list");
    assert!(listed.iter().any(|t| t == BUSYBOX), "{listed:?}");

    // 3. With that containerd running, an import goes to it directly (no
    //    second containerd on the same data dir).
    let pid = guard.containerd.as_ref().and_then(|c| c.pid());
    let again = guard
        .rt
        .block_on(images::import(&data_dir, &archive))
        .expect("import into the running containerd");
    assert_eq!(again, vec![BUSYBOX.to_string()]);
    let running = processes_mentioning(&format!("{dir}/agent/containerd/config.toml"));
    assert_eq!(
        running,
        pid.into_iter().collect::<Vec<_>>(),
        "exactly the node's containerd runs"
    );
}
