//! CRI sandbox and container configs from a pod, as upstream's
//! `generatePodSandboxConfig`, `generateContainerConfig`, `makeMounts`,
//! the security context conversion and `GetPodDNS`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};
use kelson_cri::api;

use super::labels;
use super::RuntimeConfig;
use crate::env::{self, EnvError};
use crate::resources::{self, ResourcesError};
use crate::volume_manager::MountedVolume as PodVolume;
use crate::volumes::{self, VolumeError};

/// Why a config could not be made; the text is the container's
/// `CreateContainerConfigError` message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Resources(#[from] ResourcesError),
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    VolumeNotFound { volume: String, container: String },
    #[error(
        "container's runAsUser breaks non-root policy (pod: \"{pod}\", container: {container})"
    )]
    RunAsUserRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod}\", container: {container})")]
    NonNumericUser {
        user: String,
        pod: String,
        container: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConfigError {
    let context = context.into();
    move |source| ConfigError::Io { context, source }
}

/// Upstream `format.Pod`: `name_namespace(uid)`.
pub fn format_pod(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// `<pod_logs_dir>/<ns>_<name>_<uid>` (upstream `BuildPodLogsDirectory`).
pub fn pod_log_dir(logs: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    logs.join(format!("{ns}_{name}_{uid}"))
}

/// The node's resolver settings (its resolv.conf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl HostDns {
    /// Parses resolv.conf text as upstream's `parseResolvConf`.
    pub fn parse(text: &str) -> HostDns {
        let mut out = HostDns::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.first() {
                Some(&"nameserver") if fields.len() > 1 => out.servers.push(fields[1].into()),
                Some(&"search") => {
                    // The last search line wins; "." is the root, left out.
                    out.searches = fields[1..]
                        .iter()
                        .map(|s| s.trim_end_matches('.').to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                }
                Some(&"options") => {
                    out.options = fields[1..].iter().map(|s| s.to_string()).collect()
                }
                _ => {}
            }
        }
        out
    }

    /// The node's /etc/resolv.conf; empty when unreadable.
    pub fn from_host() -> HostDns {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| HostDns::parse(&t))
            .unwrap_or_default()
    }
}

const MAX_DNS_SEARCH_PATHS: usize = 32;

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Upstream `GetPodDNS`: the pod's resolver per its `dnsPolicy`, merged
/// with `spec.dnsConfig`.
pub fn dns_config(
    pod: &Pod,
    cluster_dns: &[String],
    cluster_domain: &str,
    host: &HostDns,
) -> api::DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let hostnet = host_network(pod);
    // ClusterFirst on the host network means Default; ClusterFirstWithHostNet
    // means ClusterFirst everywhere.
    let effective = match policy {
        "None" => "None",
        "ClusterFirstWithHostNet" => "ClusterFirst",
        "ClusterFirst" if hostnet => "Default",
        "ClusterFirst" => "ClusterFirst",
        _ => "Default",
    };
    let effective = if effective == "ClusterFirst" && cluster_dns.is_empty() {
        "Default"
    } else {
        effective
    };
    let mut cfg = match effective {
        "None" => api::DnsConfig::default(),
        "ClusterFirst" => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            let mut searches = vec![
                format!("{ns}.svc.{cluster_domain}"),
                format!("svc.{cluster_domain}"),
                cluster_domain.to_string(),
            ];
            searches.extend(host.searches.iter().cloned());
            api::DnsConfig {
                servers: cluster_dns.to_vec(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => api::DnsConfig {
            servers: host.servers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
    };
    if let Some(pc) = spec.and_then(|s| s.dns_config.as_ref()) {
        cfg.servers.extend(pc.nameservers.iter().flatten().cloned());
        cfg.searches.extend(pc.searches.iter().flatten().cloned());
        // Options merge by name; the pod's value wins.
        let mut opts: Vec<(String, Option<String>)> = cfg
            .options
            .iter()
            .map(|o| match o.split_once(':') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (o.clone(), None),
            })
            .collect();
        for o in pc.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            let value = o.value.clone();
            match opts.iter_mut().find(|(k, _)| *k == name) {
                Some(slot) => slot.1 = value,
                None => opts.push((name, value)),
            }
        }
        cfg.options = opts
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}:{v}"),
                None => k,
            })
            .collect();
    }
    cfg.servers = dedup(cfg.servers);
    cfg.searches = dedup(cfg.searches);
    cfg.searches.truncate(MAX_DNS_SEARCH_PATHS);
    cfg
}

/// Upstream `GeneratePodHostNameAndDomain`: `spec.hostname` or the pod name,
/// cut to 63 characters without a trailing `-` or `.`.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    if name.len() <= 63 {
        return name;
    }
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

fn ns_mode(node: bool) -> i32 {
    if node {
        api::NamespaceMode::Node as i32
    } else {
        api::NamespaceMode::Pod as i32
    }
}

/// Upstream `namespacesForPod`.
pub fn namespaces(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let pid = if flag(|s| s.host_pid) {
        api::NamespaceMode::Node
    } else if flag(|s| s.share_process_namespace) {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::NamespaceOption {
        network: ns_mode(flag(|s| s.host_network)),
        pid: pid as i32,
        ipc: ns_mode(flag(|s| s.host_ipc)),
        ..Default::default()
    }
}

fn unconfined() -> Option<api::SecurityProfile> {
    Some(api::SecurityProfile {
        profile_type: api::security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    })
}

fn seccomp(
    pod_sc: Option<&PodSecurityContext>,
    sc: Option<&SecurityContext>,
) -> Option<api::SecurityProfile> {
    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod_sc.and_then(|p| p.seccomp_profile.as_ref()));
    match profile.map(|p| (p.type_.as_str(), p.localhost_profile.clone())) {
        Some(("RuntimeDefault", _)) => Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        Some(("Localhost", Some(path))) => Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::Localhost as i32,
            localhost_ref: format!("/var/lib/kubelet/seccomp/{path}"),
        }),
        _ => unconfined(),
    }
}

fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let Some(psc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(g) = psc.fs_group {
        out.push(g);
    }
    out.extend(psc.supplemental_groups.iter().flatten());
    out
}

/// Upstream `generatePodSandboxConfig` (+ its Linux part).
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    cfg: &RuntimeConfig,
    host_dns: &HostDns,
) -> api::PodSandboxConfig {
    let m = &pod.metadata;
    let (name, ns, uid) = (
        m.name.clone().unwrap_or_default(),
        m.namespace.clone().unwrap_or_default(),
        m.uid.clone().unwrap_or_default(),
    );
    let spec = pod.spec.as_ref();
    let mut port_mappings = Vec::new();
    for c in spec.into_iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            port_mappings.push(api::PortMapping {
                protocol: protocol(p.protocol.as_deref()),
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let psc = spec.and_then(|s| s.security_context.as_ref());
    let privileged = spec.into_iter().any(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.privileged)
                    .unwrap_or(false)
            })
    });
    let sysctls = psc
        .and_then(|p| p.sysctls.as_ref())
        .map(|v| {
            v.iter()
                // runc wants dots between the parts of a sysctl name.
                .map(|s| (s.name.replace('/', "."), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let cgroup_name = cgroup_parent(pod, cfg);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: ns.clone(),
            attempt,
        }),
        // The node's UTS namespace is shared on the host network: no
        // hostname then (runc refuses one), as upstream.
        hostname: if host_network(pod) {
            String::new()
        } else {
            pod_hostname(pod)
        },
        log_directory: pod_log_dir(&cfg.pod_logs_dir, &ns, &name, &uid)
            .to_string_lossy()
            .into_owned(),
        dns_config: Some(dns_config(
            pod,
            &cfg.cluster_dns,
            &cfg.cluster_domain,
            host_dns,
        )),
        port_mappings,
        labels: labels::sandbox_labels(pod),
        annotations: labels::sandbox_annotations(pod),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_name,
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pod)),
                run_as_user: psc
                    .and_then(|p| p.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: psc
                    .and_then(|p| p.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: supplemental_groups(pod),
                privileged,
                seccomp: seccomp(psc, None),
                selinux_options: psc.and_then(|p| p.se_linux_options.as_ref()).map(|o| {
                    api::SeLinuxOption {
                        user: o.user.clone().unwrap_or_default(),
                        role: o.role.clone().unwrap_or_default(),
                        r#type: o.type_.clone().unwrap_or_default(),
                        level: o.level.clone().unwrap_or_default(),
                    }
                }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's cgroup under `cfg.cgroup_root` (upstream's pod container
/// name, `kubepods[/qos]/pod<uid>`, with `kubepods` replaced by the root).
pub fn cgroup_parent(pod: &Pod, cfg: &RuntimeConfig) -> String {
    let mut name = resources::pod_cgroup_name(pod);
    let root: Vec<String> = cfg
        .cgroup_root
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if !name.is_empty() {
        name.remove(0);
    }
    let full: Vec<String> = root.into_iter().chain(name).collect();
    resources::cgroup_name_literal(&full, cfg.cgroup_driver)
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => api::Protocol::Udp as i32,
        Some("SCTP") => api::Protocol::Sctp as i32,
        _ => api::Protocol::Tcp as i32,
    }
}

/// Upstream `DetermineEffectiveSecurityContext`: the container's settings
/// over the pod's.
pub fn effective_security_context(pod: &Pod, c: &Container) -> SecurityContext {
    let mut sc = c.security_context.clone().unwrap_or_default();
    if let Some(psc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        if sc.run_as_user.is_none() {
            sc.run_as_user = psc.run_as_user;
        }
        if sc.run_as_group.is_none() {
            sc.run_as_group = psc.run_as_group;
        }
        if sc.run_as_non_root.is_none() {
            sc.run_as_non_root = psc.run_as_non_root;
        }
        if sc.se_linux_options.is_none() {
            sc.se_linux_options = psc.se_linux_options.clone();
        }
        if sc.seccomp_profile.is_none() {
            sc.seccomp_profile = psc.seccomp_profile.clone();
        }
    }
    sc
}

/// Upstream `verifyRunAsNonRoot`; `uid`/`username` from the image (no user
/// at all counts as root).
pub fn verify_run_as_non_root(
    pod: &Pod,
    c: &Container,
    uid: Option<i64>,
    username: &str,
) -> Result<(), ConfigError> {
    let sc = effective_security_context(pod, c);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let ids = || (format_pod(pod), c.name.clone());
    if let Some(u) = sc.run_as_user {
        if u == 0 {
            let (pod, container) = ids();
            return Err(ConfigError::RunAsUserRoot { pod, container });
        }
        return Ok(());
    }
    match (uid, username) {
        (Some(0), _) => {
            let (pod, container) = ids();
            Err(ConfigError::ImageRunsAsRoot { pod, container })
        }
        (None, u) if !u.is_empty() => {
            let (pod, container) = ids();
            Err(ConfigError::NonNumericUser {
                user: u.to_string(),
                pod,
                container,
            })
        }
        _ => Ok(()),
    }
}

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The CRI security context of a container (upstream
/// `determineEffectiveSecurityContext`).
pub fn container_security_context(
    pod: &Pod,
    c: &Container,
    image_uid: Option<i64>,
    image_user: &str,
) -> api::LinuxContainerSecurityContext {
    let sc = effective_security_context(pod, c);
    let unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut out = api::LinuxContainerSecurityContext {
        capabilities: sc.capabilities.as_ref().map(|caps| api::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(namespaces(pod)),
        selinux_options: sc.se_linux_options.as_ref().map(|o| api::SeLinuxOption {
            user: o.user.clone().unwrap_or_default(),
            role: o.role.clone().unwrap_or_default(),
            r#type: o.type_.clone().unwrap_or_default(),
            level: o.level.clone().unwrap_or_default(),
        }),
        run_as_user: sc.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| api::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(pod),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: if unmasked {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        },
        readonly_paths: if unmasked {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|s| s.to_string()).collect()
        },
        seccomp: seccomp(psc, c.security_context.as_ref()),
        ..Default::default()
    };
    if out.run_as_user.is_none() {
        out.run_as_user = image_uid.map(|value| api::Int64Value { value });
        out.run_as_username = image_user.to_string();
    }
    out
}

/// Bind mounts of a container's volumeMounts (upstream `makeMounts`):
/// read-only if the mount or the volume says so, subPath / subPathExpr
/// resolved inside the volume.
pub fn volume_mounts(
    c: &Container,
    env: &[(String, String)],
    volumes: &BTreeMap<String, PodVolume>,
) -> Result<Vec<api::Mount>, ConfigError> {
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let vol = volumes
            .get(&vm.name)
            .ok_or_else(|| ConfigError::VolumeNotFound {
                volume: vm.name.clone(),
                container: c.name.clone(),
            })?;
        let sub = match env::expand_sub_path(vm, env)? {
            Some(s) => Some(s),
            None => vm.sub_path.clone().filter(|s| !s.is_empty()),
        };
        let host = match sub {
            Some(sub) => volumes::resolve_sub_path(&vol.host_path, &sub, &vm.name, &c.name)?,
            None => vol.host_path.clone(),
        };
        let propagation = match vm.mount_propagation.as_deref() {
            Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
            _ => api::MountPropagation::PropagationPrivate,
        };
        out.push(api::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: vm.read_only.unwrap_or(false) || vol.read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Creates the host file behind the container's terminationMessagePath
/// (`<pod dir>/containers/<name>/<random>`), world-writable so any user in
/// the container can write it, as upstream.
pub fn create_termination_file(
    root: &Path,
    pod_uid: &str,
    container: &str,
) -> Result<PathBuf, ConfigError> {
    let dir = volumes::pod_dir(root, pod_uid)
        .join("containers")
        .join(container);
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let id: u32 = rand::random();
    let path = dir.join(format!("{id:08x}"));
    std::fs::File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(io_err(format!("chmod {}", path.display())))?;
    Ok(path)
}

/// Upstream `managedHostsFileContent` (pod network) or the node's hosts
/// file with a header (host network).
pub fn hosts_file_content(pod: &Pod, pod_ips: &[String], cluster_domain: &str) -> String {
    let mut out = String::new();
    if host_network(pod) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        let hostname = pod_hostname(pod);
        let sub = pod
            .spec
            .as_ref()
            .and_then(|s| s.subdomain.clone())
            .filter(|s| !s.is_empty());
        for ip in pod_ips {
            match &sub {
                Some(sub) => out.push_str(&format!(
                    "{ip}\t{hostname}.{sub}.{}.svc.{cluster_domain}\t{hostname}\n",
                    pod.metadata.namespace.as_deref().unwrap_or("")
                )),
                None => out.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push('\n');
        out.push_str("# Entries added by HostAliases.\n");
        for a in aliases {
            for h in a.hostnames.iter().flatten() {
                out.push_str(&format!("{}\t{h}\n", a.ip));
            }
        }
    }
    out
}

/// Writes `<pod dir>/etc-hosts`; its path.
pub fn write_hosts_file(
    root: &Path,
    pod: &Pod,
    pod_ips: &[String],
    cluster_domain: &str,
) -> Result<PathBuf, ConfigError> {
    let dir = volumes::pod_dir(root, pod.metadata.uid.as_deref().unwrap_or(""));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let path = dir.join("etc-hosts");
    let mut f =
        std::fs::File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(hosts_file_content(pod, pod_ips, cluster_domain).as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(format!("chmod {}", path.display())))?;
    Ok(path)
}

/// Everything `container_config` needs beyond the pod and container.
pub struct ContainerInputs<'a> {
    pub restart_count: i32,
    pub image_ref: &'a str,
    pub env: &'a [(String, String)],
    pub mounts: Vec<api::Mount>,
    pub image_uid: Option<i64>,
    pub image_user: &'a str,
    pub memory_capacity: i64,
}

/// Upstream `generateContainerConfig` + `generateLinuxContainerConfig`.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    input: ContainerInputs<'_>,
) -> Result<api::ContainerConfig, ConfigError> {
    verify_run_as_non_root(pod, c, input.image_uid, input.image_user)?;
    let (command, args) = env::expand_command(c, input.env);
    let r = resources::container_linux_resources(pod, c, input.memory_capacity)?;
    let sc = container_security_context(pod, c, input.image_uid, input.image_user);
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: u32::try_from(input.restart_count).unwrap_or(0),
        }),
        image: Some(api::ImageSpec {
            image: input.image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: input
            .env
            .iter()
            .map(|(k, v)| api::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts: input.mounts,
        labels: labels::container_labels(pod, c),
        annotations: labels::container_annotations(pod, c, input.restart_count),
        log_path: format!("{}/{}.log", c.name, input.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(api::LinuxContainerResources {
                cpu_period: r.cpu_period,
                cpu_quota: r.cpu_quota,
                cpu_shares: r.cpu_shares,
                memory_limit_in_bytes: r.memory_limit_in_bytes,
                oom_score_adj: r.oom_score_adj,
                ..Default::default()
            }),
            security_context: Some(sc),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};

    fn pod(ns: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some(ns.into());
        p.metadata.uid = Some("u1".into());
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn cluster_first_dns_has_upstream_search_paths() {
        let host = HostDns::parse("nameserver 8.8.8.8\nsearch corp.example .\noptions rotate\n");
        let cfg = dns_config(&pod("team"), &["10.43.0.10".into()], "cluster.local", &host);
        assert_eq!(cfg.servers, ["10.43.0.10"]);
        assert_eq!(
            cfg.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(cfg.options, ["ndots:5"]);
        // Host network: the node's resolver.
        let mut p = pod("team");
        p.spec.as_mut().unwrap().host_network = Some(true);
        let cfg = dns_config(&p, &["10.43.0.10".into()], "cluster.local", &host);
        assert_eq!(cfg.servers, ["8.8.8.8"]);
        assert_eq!(cfg.options, ["rotate"]);
    }

    #[test]
    fn run_as_non_root_is_verified_against_the_image() {
        let mut p = pod("d");
        p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        let err = verify_run_as_non_root(&p, &c, Some(0), "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_d(u1)\", container: app)"
        );
        assert!(verify_run_as_non_root(&p, &c, Some(1000), "").is_ok());
        let err = verify_run_as_non_root(&p, &c, None, "nobody").unwrap_err();
        assert!(err.to_string().contains("non-numeric user (nobody)"));
    }

    #[test]
    fn security_context_maps_to_cri() {
        let mut p = pod("d");
        let c = Container {
            name: "app".into(),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_user: Some(1000),
                capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.spec.as_mut().unwrap().containers = vec![c.clone()];
        let sc = container_security_context(&p, &c, Some(0), "");
        assert!(sc.no_new_privs);
        assert!(sc.readonly_rootfs);
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert!(sc.masked_paths.contains(&"/proc/kcore".to_string()));
    }

    #[test]
    fn mounts_resolve_subpaths_and_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("v");
        std::fs::create_dir(&vol).unwrap();
        let volumes: BTreeMap<String, PodVolume> = [(
            "data".to_string(),
            PodVolume {
                host_path: vol.clone(),
                read_only: true,
            },
        )]
        .into();
        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                sub_path_expr: Some("$(POD)/logs".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let env = vec![("POD".to_string(), "web".to_string())];
        let m = volume_mounts(&c, &env, &volumes).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m[0].readonly);
        assert!(m[0].host_path.ends_with("v/web/logs"), "{}", m[0].host_path);
        let mut c2 = c.clone();
        c2.volume_mounts.as_mut().unwrap()[0].name = "nope".into();
        assert_eq!(
            volume_mounts(&c2, &env, &volumes).unwrap_err().to_string(),
            "cannot find volume \"nope\" to mount into container \"app\""
        );
    }

    #[test]
    fn cgroup_parent_is_under_the_configured_root() {
        let cfg = RuntimeConfig {
            node_name: "n".into(),
            root_dir: "/r".into(),
            pod_logs_dir: "/l".into(),
            cgroup_driver: resources::CgroupDriver::Cgroupfs,
            cgroup_root: "/kelson-test/kubepods".into(),
            pause_image: "p".into(),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
        };
        assert_eq!(
            cgroup_parent(&pod("d"), &cfg),
            "/kelson-test/kubepods/besteffort/podu1"
        );
    }
}
