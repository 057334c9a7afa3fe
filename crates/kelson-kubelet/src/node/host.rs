//! What the kubelet reports about its machine (upstream reads it through
//! cAdvisor): cores, memory, the root filesystem's size, huge pages and the
//! identity files, plus the resource arithmetic for capacity and
//! allocatable.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Upstream's default hard eviction threshold `memory.available<100Mi`,
/// kept back from allocatable.
pub const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;

/// Upstream's default hard eviction threshold `nodefs.available<10%`; a Go
/// `float32`, which is why [`allocatable_ephemeral_storage`] widens it.
pub const EVICTION_NODEFS_PERCENT: f32 = 0.1;

/// The machine facts behind a Node's capacity and nodeInfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostInfo {
    pub cpu_cores: u64,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the kubelet's root directory.
    pub ephemeral_storage_bytes: u64,
    /// `hugepages-2Mi` → bytes reserved in pages of that size.
    pub hugepages: BTreeMap<String, u64>,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

impl HostInfo {
    /// Reads this machine's facts; anything unreadable is left zero or
    /// empty (the Ready condition then reports missing capacity).
    pub fn detect(root_dir: &Path) -> HostInfo {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string());
        HostInfo {
            cpu_cores: cpu_cores(),
            memory_bytes: read("/proc/meminfo")
                .ok()
                .and_then(|m| mem_total_bytes(&m))
                .unwrap_or(0),
            ephemeral_storage_bytes: fs_capacity(root_dir).unwrap_or(0),
            hugepages: hugepages(Path::new("/sys/kernel/mm/hugepages")),
            machine_id: read("/etc/machine-id").unwrap_or_default(),
            system_uuid: read("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
            boot_id: read("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            kernel_version: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image: read("/etc/os-release")
                .ok()
                .and_then(|s| pretty_name(&s))
                .unwrap_or_else(|| "Linux".to_string()),
        }
    }
}

/// Logical CPUs: the `processor` entries of /proc/cpuinfo (as cAdvisor
/// counts them, ignoring affinity), else what the process may use.
fn cpu_cores() -> u64 {
    let from_cpuinfo = fs::read_to_string("/proc/cpuinfo")
        .map(|s| count_processors(&s))
        .unwrap_or(0);
    if from_cpuinfo > 0 {
        return from_cpuinfo;
    }
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(0)
}

fn count_processors(cpuinfo: &str) -> u64 {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count() as u64
}

/// `MemTotal` of /proc/meminfo (given in kB, meaning KiB) in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let v = os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let v = v.trim();
    let unquoted = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    (!unquoted.is_empty()).then(|| unquoted.to_string())
}

/// Size of the filesystem holding `path` (or its nearest existing
/// ancestor: the kubelet's root may not exist yet).
fn fs_capacity(path: &Path) -> Option<u64> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if cur.exists() {
            let st = nix::sys::statvfs::statvfs(cur).ok()?;
            // The libc field types are narrower on 32-bit targets.
            #[allow(clippy::useless_conversion)]
            let (blocks, frsize) = (u64::from(st.blocks()), u64::from(st.fragment_size()));
            return blocks.checked_mul(frsize);
        }
        p = cur.parent();
    }
    None
}

/// Huge page pools from `/sys/kernel/mm/hugepages/hugepages-<N>kB`, keyed by
/// the resource name upstream uses (`hugepages-2Mi`).
fn hugepages(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(kib) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let pages: u64 = fs::read_to_string(e.path().join("nr_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let page_bytes = kib.saturating_mul(1024);
        out.insert(
            format!("hugepages-{}", binary_si(page_bytes)),
            pages.saturating_mul(page_bytes),
        );
    }
    out
}

/// A byte count as upstream's canonical BinarySI quantity: the largest
/// binary suffix that divides it exactly (`61202244Ki`, `2Mi`), a plain
/// number when none does, and small values in decimal (`1k`, `512`).
pub fn binary_si(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    if bytes < 1024 {
        // Upstream prints values below 1024 in DecimalSI.
        return if bytes % 1000 == 0 {
            format!("{}k", bytes / 1000)
        } else {
            bytes.to_string()
        };
    }
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut n = bytes;
    let mut k = 0;
    while n % 1024 == 0 && k < SUFFIXES.len() - 1 {
        n /= 1024;
        k += 1;
    }
    format!("{n}{}", SUFFIXES[k])
}

/// Allocatable memory: capacity less the 100Mi eviction threshold.
pub fn allocatable_memory(capacity: u64) -> u64 {
    capacity.saturating_sub(EVICTION_MEMORY_BYTES)
}

/// Allocatable ephemeral storage: capacity less 10% of it, computed as
/// upstream (`int64(float64(float32 0.1) * float64(capacity))`), so a
/// 61202244Ki disk leaves 56403987978 bytes.
pub fn allocatable_ephemeral_storage(capacity: u64) -> u64 {
    // Truncation towards zero, as Go's int64 conversion.
    let reserved = (f64::from(EVICTION_NODEFS_PERCENT) * capacity as f64) as u64;
    capacity.saturating_sub(reserved)
}

/// This machine's architecture under Go's name (`GOARCH`).
pub fn go_arch() -> &'static str {
    go_arch_of(std::env::consts::ARCH)
}

fn go_arch_of(rust_arch: &'static str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_upstream() {
        assert_eq!(binary_si(61_202_244 * 1024), "61202244Ki");
        assert_eq!(binary_si(4_025_216 * 1024), "4025216Ki");
        assert_eq!(binary_si(2 * 1024 * 1024), "2Mi");
        assert_eq!(binary_si(1 << 30), "1Gi");
        assert_eq!(binary_si(56_403_987_978), "56403987978");
        assert_eq!(binary_si(0), "0");
        assert_eq!(binary_si(1000), "1k");
        assert_eq!(binary_si(512), "512");
    }

    #[test]
    fn allocatable_keeps_back_eviction_thresholds() {
        // A typical kubeadm node: 4025216Ki memory, 61202244Ki disk.
        assert_eq!(binary_si(allocatable_memory(4_025_216 * 1024)), "3922816Ki");
        assert_eq!(
            allocatable_ephemeral_storage(61_202_244 * 1024),
            56_403_987_978
        );
        assert_eq!(allocatable_memory(1024), 0);
    }

    #[test]
    fn proc_files() {
        let meminfo = "MemTotal:        4025216 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(4_025_216 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB"), None);
        let osr = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            pretty_name(osr).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Alpine").as_deref(), Some("Alpine"));
        assert_eq!(pretty_name("NAME=x"), None);
        assert_eq!(
            count_processors("processor\t: 0\nmodel\t: x\n\nprocessor\t: 1\n"),
            2
        );
    }

    #[test]
    fn go_architecture_names() {
        assert_eq!(go_arch_of("x86_64"), "amd64");
        assert_eq!(go_arch_of("aarch64"), "arm64");
        assert_eq!(go_arch_of("s390x"), "s390x");
    }

    #[test]
    fn hugepage_pools() {
        let tmp = tempfile::tempdir().unwrap();
        for (dir, n) in [("hugepages-2048kB", "3"), ("hugepages-1048576kB", "0")] {
            fs::create_dir(tmp.path().join(dir)).unwrap();
            fs::write(tmp.path().join(dir).join("nr_hugepages"), n).unwrap();
        }
        fs::create_dir(tmp.path().join("other")).unwrap();
        let hp = hugepages(tmp.path());
        assert_eq!(
            hp,
            BTreeMap::from([
                ("hugepages-1Gi".to_string(), 0),
                ("hugepages-2Mi".to_string(), 6 << 20),
            ])
        );
    }

    #[test]
    fn detects_this_machine() {
        let tmp = tempfile::tempdir().unwrap();
        let h = HostInfo::detect(&tmp.path().join("not/yet/created"));
        assert!(h.cpu_cores > 0);
        assert!(h.memory_bytes > 0);
        assert!(h.ephemeral_storage_bytes > 0);
        assert!(!h.kernel_version.is_empty());
    }
}
