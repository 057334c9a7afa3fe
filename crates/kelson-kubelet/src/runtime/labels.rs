//! Labels and annotations on sandboxes and containers, as upstream's
//! `kuberuntime/labels.go`: everything a restarted kubelet needs to adopt
//! (and gracefully stop) what it created, from the CRI alone.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, LifecycleHandler, Pod};

pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
pub const POD_DELETION_GRACE_PERIOD_LABEL: &str = "io.kubernetes.pod.deletionGracePeriod";
pub const POD_TERMINATION_GRACE_PERIOD_LABEL: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const CONTAINER_HASH_LABEL: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT_LABEL: &str = "io.kubernetes.container.restartCount";
pub const CONTAINER_TERMINATION_MESSAGE_PATH_LABEL: &str =
    "io.kubernetes.container.terminationMessagePath";
pub const CONTAINER_TERMINATION_MESSAGE_POLICY_LABEL: &str =
    "io.kubernetes.container.terminationMessagePolicy";
pub const CONTAINER_PRE_STOP_HANDLER_LABEL: &str = "io.kubernetes.container.preStopHandler";
pub const CONTAINER_PORTS_LABEL: &str = "io.kubernetes.container.ports";

type Map = HashMap<String, String>;

fn pod_identity(pod: &Pod) -> Map {
    let m = &pod.metadata;
    let mut out = Map::new();
    out.insert(POD_NAME_LABEL.into(), m.name.clone().unwrap_or_default());
    out.insert(
        POD_NAMESPACE_LABEL.into(),
        m.namespace.clone().unwrap_or_default(),
    );
    out.insert(POD_UID_LABEL.into(), m.uid.clone().unwrap_or_default());
    out
}

/// Sandbox labels: the pod's labels plus its identity (upstream `newPodLabels`).
pub fn sandbox_labels(pod: &Pod) -> Map {
    let mut out: Map = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(pod_identity(pod));
    out
}

/// Sandbox annotations: the pod's annotations.
pub fn sandbox_annotations(pod: &Pod) -> Map {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Container labels (upstream `newContainerLabels`).
pub fn container_labels(pod: &Pod, container: &Container) -> Map {
    let mut out = pod_identity(pod);
    out.insert(CONTAINER_NAME_LABEL.into(), container.name.clone());
    out
}

/// Upstream `HashContainer`: FNV-32a over the JSON of the fields whose
/// change restarts a running container (name and image), as hex.
pub fn container_hash(container: &Container) -> String {
    let json = serde_json::json!({"image": container.image.clone().unwrap_or_default(), "name": container.name});
    let mut h: u32 = 0x811c_9dc5;
    for b in json.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:x}")
}

/// Container annotations (upstream `newContainerAnnotations`).
pub fn container_annotations(pod: &Pod, container: &Container, restart_count: i32) -> Map {
    let mut out = Map::new();
    out.insert(CONTAINER_HASH_LABEL.into(), container_hash(container));
    out.insert(
        CONTAINER_RESTART_COUNT_LABEL.into(),
        restart_count.to_string(),
    );
    out.insert(
        CONTAINER_TERMINATION_MESSAGE_PATH_LABEL.into(),
        container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
    );
    out.insert(
        CONTAINER_TERMINATION_MESSAGE_POLICY_LABEL.into(),
        container
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        out.insert(POD_DELETION_GRACE_PERIOD_LABEL.into(), g.to_string());
    }
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        out.insert(POD_TERMINATION_GRACE_PERIOD_LABEL.into(), g.to_string());
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        if let Ok(s) = serde_json::to_string(pre_stop) {
            out.insert(CONTAINER_PRE_STOP_HANDLER_LABEL.into(), s);
        }
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        if let Ok(s) = serde_json::to_string(ports) {
            out.insert(CONTAINER_PORTS_LABEL.into(), s);
        }
    }
    out
}

/// What a container's labels and annotations say about it: enough to stop
/// it without the pod object (upstream `getContainerInfoFromLabels` /
/// `getContainerInfoFromAnnotations` / `restoreSpecsFromContainerLabels`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerInfo {
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub container_name: String,
    pub hash: String,
    pub restart_count: i32,
    pub termination_message_path: String,
    pub termination_message_policy: String,
    pub deletion_grace_period: Option<i64>,
    pub termination_grace_period: Option<i64>,
    pub pre_stop: Option<LifecycleHandler>,
    pub ports: Vec<ContainerPort>,
}

impl ContainerInfo {
    pub fn from_cri(labels: &Map, annotations: &Map) -> ContainerInfo {
        let l = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let a = |k: &str| annotations.get(k).cloned().unwrap_or_default();
        let num = |k: &str| annotations.get(k).and_then(|v| v.parse::<i64>().ok());
        ContainerInfo {
            pod_name: l(POD_NAME_LABEL),
            pod_namespace: l(POD_NAMESPACE_LABEL),
            pod_uid: l(POD_UID_LABEL),
            container_name: l(CONTAINER_NAME_LABEL),
            hash: a(CONTAINER_HASH_LABEL),
            // Containers without the annotation count as never restarted.
            restart_count: num(CONTAINER_RESTART_COUNT_LABEL)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0),
            termination_message_path: a(CONTAINER_TERMINATION_MESSAGE_PATH_LABEL),
            termination_message_policy: a(CONTAINER_TERMINATION_MESSAGE_POLICY_LABEL),
            deletion_grace_period: num(POD_DELETION_GRACE_PERIOD_LABEL),
            termination_grace_period: num(POD_TERMINATION_GRACE_PERIOD_LABEL),
            pre_stop: annotations
                .get(CONTAINER_PRE_STOP_HANDLER_LABEL)
                .and_then(|s| serde_json::from_str(s).ok()),
            ports: annotations
                .get(CONTAINER_PORTS_LABEL)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
        }
    }

    /// A pod and container rebuilt from the labels, for the stop path when
    /// the pod object is gone.
    pub fn restore(&self) -> (Pod, Container) {
        let mut pod = Pod::default();
        pod.metadata.name = Some(self.pod_name.clone());
        pod.metadata.namespace = Some(self.pod_namespace.clone());
        pod.metadata.uid = Some(self.pod_uid.clone());
        pod.metadata.deletion_grace_period_seconds = self.deletion_grace_period;
        let container = Container {
            name: self.container_name.clone(),
            termination_message_path: Some(self.termination_message_path.clone()),
            lifecycle: self
                .pre_stop
                .clone()
                .map(|h| k8s_openapi::api::core::v1::Lifecycle {
                    pre_stop: Some(h),
                    ..Default::default()
                }),
            ports: (!self.ports.is_empty()).then(|| self.ports.clone()),
            ..Default::default()
        };
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            termination_grace_period_seconds: self.termination_grace_period,
            containers: vec![container.clone()],
            ..Default::default()
        });
        (pod, container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, PodSpec};

    fn pod() -> (Pod, Container) {
        let c = Container {
            name: "app".into(),
            image: Some("busybox:1".into()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["sh".into(), "-c".into(), "sleep 1".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ports: Some(vec![ContainerPort {
                container_port: 80,
                name: Some("http".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("u-1".into());
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.metadata.deletion_grace_period_seconds = Some(7);
        p.spec = Some(PodSpec {
            termination_grace_period_seconds: Some(30),
            containers: vec![c.clone()],
            ..Default::default()
        });
        (p, c)
    }

    #[test]
    fn labels_round_trip_for_readoption() {
        let (p, c) = pod();
        let labels = container_labels(&p, &c);
        let ann = container_annotations(&p, &c, 3);
        let info = ContainerInfo::from_cri(&labels, &ann);
        assert_eq!(info.pod_name, "web");
        assert_eq!(info.pod_namespace, "ns");
        assert_eq!(info.pod_uid, "u-1");
        assert_eq!(info.container_name, "app");
        assert_eq!(info.restart_count, 3);
        assert_eq!(info.hash, container_hash(&c));
        assert_eq!(info.termination_message_path, "/dev/termination-log");
        assert_eq!(info.termination_message_policy, "FallbackToLogsOnError");
        assert_eq!(info.deletion_grace_period, Some(7));
        assert_eq!(info.termination_grace_period, Some(30));
        let (rp, rc) = info.restore();
        assert_eq!(rp.metadata.deletion_grace_period_seconds, Some(7));
        assert_eq!(rc.lifecycle, c.lifecycle);
        assert_eq!(rc.ports, c.ports);
        let sl = sandbox_labels(&p);
        assert_eq!(sl.get("app").map(String::as_str), Some("web"));
        assert_eq!(sl.get(POD_UID_LABEL).map(String::as_str), Some("u-1"));
    }

    #[test]
    fn hash_changes_with_image_only() {
        let (_, c) = pod();
        let mut c2 = c.clone();
        c2.args = Some(vec!["x".into()]);
        assert_eq!(container_hash(&c), container_hash(&c2));
        c2.image = Some("busybox:2".into());
        assert_ne!(container_hash(&c), container_hash(&c2));
    }
}
