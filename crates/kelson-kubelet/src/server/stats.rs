//! `/stats/summary` in upstream's Summary shape (stats/v1alpha1): node CPU
//! and memory from cgroups and /proc, the root filesystem, and per-pod
//! container CPU, memory and writable-layer use from CRI
//! ListContainerStats. Pod totals are the sums of their containers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use kelson_cri::api::ContainerStats;

/// Node CPU use between two reads, for `usageNanoCores`.
#[derive(Default)]
pub struct CpuSampler {
    last: Mutex<Option<(Instant, u64)>>,
    rate: Mutex<Option<u64>>,
}

impl CpuSampler {
    /// Records a cumulative reading; the rate since the previous one
    /// (at least 100 ms before) becomes the current usageNanoCores.
    pub fn observe(&self, now: Instant, usage_ns: u64) -> Option<u64> {
        let mut last = self.last.lock();
        if let Some((t, u)) = *last {
            let dt = now.saturating_duration_since(t).as_nanos();
            if dt < 100_000_000 {
                return *self.rate.lock();
            }
            let rate = (u128::from(usage_ns.saturating_sub(u)) * 1_000_000_000 / dt) as u64;
            *self.rate.lock() = Some(rate);
        }
        *last = Some((now, usage_ns));
        *self.rate.lock()
    }
}

/// Cumulative CPU time of the whole node in nanoseconds: the root cgroup's
/// (v2 `cpu.stat`, v1 `cpuacct.usage`), else /proc/stat.
pub fn node_cpu_usage(cgroup_root: &Path, proc_root: &Path) -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string(cgroup_root.join("cpu.stat")) {
        if let Some(us) = s
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(us * 1000);
        }
    }
    for p in ["cpuacct/cpuacct.usage", "cpu,cpuacct/cpuacct.usage"] {
        if let Some(ns) = std::fs::read_to_string(cgroup_root.join(p))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            return Some(ns);
        }
    }
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy time in ticks
    // of USER_HZ (100 on Linux).
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum();
    Some(busy * 10_000_000)
}

/// Node memory from /proc/meminfo, as the kubelet defines it: working set
/// = usage - inactive file pages, available = capacity - working set.
pub fn node_memory(proc_root: &Path, time: &str) -> Value {
    let info = std::fs::read_to_string(proc_root.join("meminfo")).unwrap_or_default();
    let kb = |name: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let (Some(total), Some(free)) = (kb("MemTotal"), kb("MemFree")) else {
        return json!({ "time": time });
    };
    let usage = total.saturating_sub(free);
    let working_set = usage.saturating_sub(kb("Inactive(file)").unwrap_or(0));
    let mut m = json!({
        "time": time,
        "availableBytes": total.saturating_sub(working_set),
        "usageBytes": usage,
        "workingSetBytes": working_set,
    });
    if let Some(rss) = kb("AnonPages") {
        m["rssBytes"] = json!(rss);
    }
    if let Ok(vm) = std::fs::read_to_string(proc_root.join("vmstat")) {
        let get = |k: &str| {
            vm.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(f), Some(mj)) = (get("pgfault"), get("pgmajfault")) {
            m["pageFaults"] = json!(f);
            m["majorPageFaults"] = json!(mj);
        }
    }
    m
}

/// The node's boot time from /proc/stat's btime.
pub fn boot_time(proc_root: &Path) -> Option<String> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let secs: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Timestamp::from_second(secs).ok().map(rfc3339)
}

pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn uval(v: &Option<kelson_cri::api::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

fn ns_time(ns: i64) -> String {
    rfc3339(Timestamp::from_nanosecond(i128::from(ns)).unwrap_or_else(|_| Timestamp::now()))
}

/// One container's stats in the Summary's ContainerStats shape.
pub fn container_stats(name: &str, s: &ContainerStats, start: Option<&str>) -> Value {
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    if let Some(t) = start {
        c.insert("startTime".into(), json!(t));
    }
    if let Some(cpu) = &s.cpu {
        let mut v = json!({ "time": ns_time(cpu.timestamp) });
        if let Some(x) = uval(&cpu.usage_nano_cores) {
            v["usageNanoCores"] = json!(x);
        }
        if let Some(x) = uval(&cpu.usage_core_nano_seconds) {
            v["usageCoreNanoSeconds"] = json!(x);
        }
        c.insert("cpu".into(), v);
    }
    if let Some(m) = &s.memory {
        let mut v = json!({ "time": ns_time(m.timestamp) });
        for (k, x) in [
            ("availableBytes", &m.available_bytes),
            ("usageBytes", &m.usage_bytes),
            ("workingSetBytes", &m.working_set_bytes),
            ("rssBytes", &m.rss_bytes),
            ("pageFaults", &m.page_faults),
            ("majorPageFaults", &m.major_page_faults),
        ] {
            if let Some(x) = uval(x) {
                v[k] = json!(x);
            }
        }
        c.insert("memory".into(), v);
    }
    if let Some(fs) = &s.writable_layer {
        let mut v = json!({ "time": ns_time(fs.timestamp) });
        if let Some(x) = uval(&fs.used_bytes) {
            v["usedBytes"] = json!(x);
        }
        if let Some(x) = uval(&fs.inodes_used) {
            v["inodesUsed"] = json!(x);
        }
        c.insert("rootfs".into(), v);
    }
    Value::Object(c)
}

/// Sums the given numeric fields of the containers' `section`.
fn sum_section(containers: &[Value], section: &str, fields: &[&str], time: &str) -> Option<Value> {
    let present: Vec<&Value> = containers.iter().filter_map(|c| c.get(section)).collect();
    if present.is_empty() {
        return None;
    }
    let mut v = json!({ "time": time });
    for f in fields {
        let vals: Vec<u64> = present.iter().filter_map(|s| s.get(*f)?.as_u64()).collect();
        if !vals.is_empty() {
            v[*f] = json!(vals.iter().sum::<u64>());
        }
    }
    Some(v)
}

/// The `pods` list: every pod the provider knows, with the stats of its
/// containers (matched by the CRI labels the kubelet sets).
pub fn pod_stats(pods: &[Pod], stats: &[ContainerStats], time: &str) -> Vec<Value> {
    let mut by_uid: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in stats {
        let Some(a) = &s.attributes else { continue };
        let uid = a
            .labels
            .get("io.kubernetes.pod.uid")
            .cloned()
            .unwrap_or_default();
        let name = a
            .labels
            .get("io.kubernetes.container.name")
            .cloned()
            .or_else(|| a.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        if uid.is_empty() || name.is_empty() || name == "POD" {
            continue;
        }
        let start = pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
            .and_then(|p| p.status.as_ref())
            .and_then(|st| st.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == name))
            .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .map(|t| rfc3339(t.0));
        by_uid
            .entry(uid)
            .or_default()
            .push(container_stats(&name, s, start.as_deref()));
    }
    pods.iter()
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let containers = by_uid.remove(&uid).unwrap_or_default();
            let mut v = json!({
                "podRef": {
                    "name": p.metadata.name.clone().unwrap_or_default(),
                    "namespace": p.metadata.namespace.clone().unwrap_or_default(),
                    "uid": uid,
                },
                "startTime": p.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| rfc3339(t.0)),
            });
            if let Some(cpu) =
                sum_section(&containers, "cpu", &["usageNanoCores", "usageCoreNanoSeconds"], time)
            {
                v["cpu"] = cpu;
            }
            if let Some(mem) = sum_section(
                &containers,
                "memory",
                &["usageBytes", "workingSetBytes", "rssBytes", "pageFaults", "majorPageFaults"],
                time,
            ) {
                v["memory"] = mem;
            }
            v["containers"] = Value::Array(containers);
            v
        })
        .collect()
}

/// The root filesystem's size and use.
pub fn fs_stats(path: &Path, time: &str) -> Option<Value> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size();
    let capacity = s.blocks() * frag;
    let available = s.blocks_available() * frag;
    let used = (s.blocks() - s.blocks_free()) * frag;
    Some(json!({
        "time": time,
        "availableBytes": available,
        "capacityBytes": capacity,
        "usedBytes": used,
        "inodesFree": s.files_free(),
        "inodes": s.files(),
        "inodesUsed": s.files().saturating_sub(s.files_free()),
    }))
}

/// A metric of `/metrics/resource`: name, help, type and whether it is
/// per container, per pod or per node.
struct Metric {
    name: &'static str,
    help: &'static str,
    counter: bool,
}

const NODE_CPU: Metric = Metric {
    name: "node_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the node in core-seconds",
    counter: true,
};
const NODE_MEMORY: Metric = Metric {
    name: "node_memory_working_set_bytes",
    help: "Current working set of the node in bytes",
    counter: false,
};
const CONTAINER_START: Metric = Metric {
    name: "container_start_time_seconds",
    help: "Start time of the container since unix epoch in seconds",
    counter: false,
};
const CONTAINER_CPU: Metric = Metric {
    name: "container_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the container in core-seconds",
    counter: true,
};
const CONTAINER_MEMORY: Metric = Metric {
    name: "container_memory_working_set_bytes",
    help: "Current working set of the container in bytes",
    counter: false,
};
const POD_CPU: Metric = Metric {
    name: "pod_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the pod in core-seconds",
    counter: true,
};
const POD_MEMORY: Metric = Metric {
    name: "pod_memory_working_set_bytes",
    help: "Current working set of the pod in bytes",
    counter: false,
};

/// Milliseconds since the epoch of a Summary `time` field.
fn millis(v: &Value) -> Option<i64> {
    let t: Timestamp = v.get("time")?.as_str()?.parse().ok()?;
    Some(t.as_millisecond())
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics/resource` (the Prometheus text format metrics-server reads)
/// from a Summary, as upstream's resource metrics collector derives it.
pub fn resource_metrics(summary: &Value) -> String {
    let mut samples: Vec<(&Metric, String, f64, Option<i64>)> = Vec::new();
    let node = &summary["node"];
    if let Some(ns) = node["cpu"]["usageCoreNanoSeconds"].as_u64() {
        samples.push((
            &NODE_CPU,
            String::new(),
            ns as f64 / 1e9,
            millis(&node["cpu"]),
        ));
    }
    if let Some(ws) = node["memory"]["workingSetBytes"].as_u64() {
        samples.push((
            &NODE_MEMORY,
            String::new(),
            ws as f64,
            millis(&node["memory"]),
        ));
    }
    for pod in summary["pods"].as_array().into_iter().flatten() {
        let name = escape_label(pod["podRef"]["name"].as_str().unwrap_or_default());
        let ns = escape_label(pod["podRef"]["namespace"].as_str().unwrap_or_default());
        for c in pod["containers"].as_array().into_iter().flatten() {
            let labels = format!(
                "container=\"{}\",namespace=\"{ns}\",pod=\"{name}\"",
                escape_label(c["name"].as_str().unwrap_or_default())
            );
            if let Some(t) = c["startTime"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
            {
                samples.push((&CONTAINER_START, labels.clone(), t.as_second() as f64, None));
            }
            if let Some(v) = c["cpu"]["usageCoreNanoSeconds"].as_u64() {
                samples.push((
                    &CONTAINER_CPU,
                    labels.clone(),
                    v as f64 / 1e9,
                    millis(&c["cpu"]),
                ));
            }
            if let Some(v) = c["memory"]["workingSetBytes"].as_u64() {
                samples.push((&CONTAINER_MEMORY, labels, v as f64, millis(&c["memory"])));
            }
        }
        let labels = format!("namespace=\"{ns}\",pod=\"{name}\"");
        if let Some(v) = pod["cpu"]["usageCoreNanoSeconds"].as_u64() {
            samples.push((
                &POD_CPU,
                labels.clone(),
                v as f64 / 1e9,
                millis(&pod["cpu"]),
            ));
        }
        if let Some(v) = pod["memory"]["workingSetBytes"].as_u64() {
            samples.push((&POD_MEMORY, labels, v as f64, millis(&pod["memory"])));
        }
    }
    let mut out = String::new();
    for m in [
        &CONTAINER_CPU,
        &CONTAINER_MEMORY,
        &CONTAINER_START,
        &NODE_CPU,
        &NODE_MEMORY,
        &POD_CPU,
        &POD_MEMORY,
    ] {
        let mine: Vec<_> = samples.iter().filter(|s| std::ptr::eq(s.0, m)).collect();
        if mine.is_empty() {
            continue;
        }
        let kind = if m.counter { "counter" } else { "gauge" };
        out.push_str(&format!(
            "# HELP {} [STABLE] {}\n# TYPE {} {kind}\n",
            m.name, m.help, m.name
        ));
        for (_, labels, value, ts) in mine {
            out.push_str(m.name);
            if !labels.is_empty() {
                out.push_str(&format!("{{{labels}}}"));
            }
            out.push_str(&format!(" {value}"));
            if let Some(ts) = ts {
                out.push_str(&format!(" {ts}"));
            }
            out.push('\n');
        }
    }
    out.push_str("# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelson_cri::api::{ContainerAttributes, CpuUsage, MemoryUsage, UInt64Value};

    #[test]
    fn cpu_rate_from_two_readings() {
        let s = CpuSampler::default();
        let t0 = Instant::now();
        assert_eq!(s.observe(t0, 1_000_000_000), None);
        // 0.5 s of CPU over 1 s: half a core.
        let rate = s.observe(t0 + std::time::Duration::from_secs(1), 1_500_000_000);
        assert_eq!(rate, Some(500_000_000));
        // Too soon for a new rate: the last one stands.
        let rate = s.observe(t0 + std::time::Duration::from_millis(1010), 9_000_000_000);
        assert_eq!(rate, Some(500_000_000));
    }

    #[test]
    fn memory_and_cpu_from_proc_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("meminfo"),
            "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\nAnonPages:  50 kB\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("stat"),
            "cpu  10 0 5 100 0 0 0 0 0 0\nbtime 1700000000\n",
        )
        .unwrap();
        let m = node_memory(d.path(), "t");
        assert_eq!(m["usageBytes"], 800 * 1024);
        assert_eq!(m["workingSetBytes"], 700 * 1024);
        assert_eq!(m["availableBytes"], 300 * 1024);
        assert_eq!(m["rssBytes"], 50 * 1024);
        // No cgroup files: /proc/stat's busy ticks.
        assert_eq!(
            node_cpu_usage(&d.path().join("none"), d.path()),
            Some(150_000_000)
        );
        assert_eq!(boot_time(d.path()).as_deref(), Some("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn pods_sum_their_containers() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "status": {"startTime": "2024-01-01T00:00:00Z"}
        }))
        .unwrap();
        let stat = |name: &str, cpu: u64, mem: u64| ContainerStats {
            attributes: Some(ContainerAttributes {
                id: name.into(),
                labels: [
                    ("io.kubernetes.pod.uid".to_string(), "u1".to_string()),
                    ("io.kubernetes.container.name".to_string(), name.to_string()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            cpu: Some(CpuUsage {
                timestamp: 1,
                usage_core_nano_seconds: Some(UInt64Value { value: cpu }),
                usage_nano_cores: None,
            }),
            memory: Some(MemoryUsage {
                working_set_bytes: Some(UInt64Value { value: mem }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = pod_stats(&[pod], &[stat("a", 10, 100), stat("b", 5, 50)], "t");
        assert_eq!(v[0]["podRef"]["name"], "web");
        assert_eq!(v[0]["startTime"], "2024-01-01T00:00:00Z");
        assert_eq!(v[0]["cpu"]["usageCoreNanoSeconds"], 15);
        assert_eq!(v[0]["memory"]["workingSetBytes"], 150);
        assert_eq!(v[0]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn resource_metrics_in_prometheus_text() {
        let summary = json!({
            "node": {"cpu": {"time": "2024-01-01T00:00:00Z", "usageCoreNanoSeconds": 1_500_000_000u64},
                     "memory": {"time": "2024-01-01T00:00:00Z", "workingSetBytes": 2048}},
            "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u"},
                      "cpu": {"time": "2024-01-01T00:00:00Z", "usageCoreNanoSeconds": 500_000_000u64},
                      "containers": [{"name": "app", "startTime": "2024-01-01T00:00:00Z",
                                      "memory": {"time": "2024-01-01T00:00:00Z", "workingSetBytes": 100}}]}]
        });
        let text = resource_metrics(&summary);
        assert!(text.contains("# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total 1.5 1704067200000\n"), "{text}");
        assert!(text.contains("node_memory_working_set_bytes 2048 1704067200000\n"));
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 100 1704067200000\n"
        ));
        assert!(text.contains(
            "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"web\"} 1704067200\n"
        ));
        assert!(
            text.contains("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 0.5 ")
        );
        assert!(text.ends_with("resource_scrape_error 0\n"));
    }
}
